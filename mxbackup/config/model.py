"""The configuration's frozen objects; each field's `setting` says how its key is read.

One definition per key: the YAML key (the field's name unless ``key=`` says otherwise), its
default (the dataclass default), its one-line doc and its reader.  ``etc/mx.yaml`` explains
each key at length for the operator.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, fields
from typing import Literal, get_args

import mxbackup.config.values as v
from mxbackup.config.checks import ChecksConfig
from mxbackup.config.reader import Items, setting
from mxbackup.config.scalars import (
    boolean,
    choice,
    integer,
    optional_file,
    optional_secret_file,
    readable_file,
    seconds,
    seconds_or_off,
    secret_file,
    text,
)
from mxbackup.config.stores import state_store
from mxbackup.config.values import AddressList, IPNetwork, Target

Kind = Literal["local", "external"]
Security = Literal["none", "ssl", "starttls", "starttls_required"]
KINDS: tuple[str, ...] = get_args(Kind)
SECURITIES: tuple[str, ...] = get_args(Security)


@dataclass(frozen=True)
class TLSConfig:
    certificate: str = setting("PEM certificate chain offered with STARTTLS", readable_file)
    key: str = setting("PEM private key of that certificate", secret_file)
    profile: str = setting(
        "modern | intermediate | compatible (versions and cipher suites offered)",
        choice("intermediate", "modern", "compatible"),
        default="intermediate",
    )
    extra_certificate: str | None = setting(
        "a second certificate of another key type (e.g. ECDSA beside RSA)",
        optional_file,
        default=None,
        null=True,
    )
    extra_key: str | None = setting(
        "the private key of extra_certificate", optional_secret_file, default=None, null=True
    )


@dataclass(frozen=True)
class ServerConfig:
    hostname: str = setting("our host name: greeting, EHLO, Received, DSNs", v.host_name)
    listen: tuple[str, ...] = setting("endpoint descriptions to accept SMTP on", v.ENDPOINTS)
    spool: str = setting("the queue's root directory", text)
    tls: TLSConfig | None = setting(
        "offer STARTTLS with these files", section=TLSConfig, default=None, null=True
    )
    max_message_size: int = setting("largest message (bytes)", integer(1), default=26214400)
    max_recipients: int = setting("recipients per transaction", integer(1), default=1000)
    max_connections: int = setting("connections in total", integer(1), default=500)
    max_connections_per_ip: int = setting("connections per client IP", integer(1), default=20)
    idle_timeout: float = setting("seconds a silent client is kept", seconds, default=300.0)
    max_received_headers: int = setting("Received headers (loops)", integer(1), default=50)
    min_free_space: int = setting(
        "bytes the spool's disk keeps free", integer(0), default=104857600
    )
    control_socket: str = setting(
        "the admin socket; default <spool>/control.sock", text, default=""
    )
    auth_failure_limit: int = setting(
        "failed AUTH per client within auth_failure_window; beyond: 454; 0 = no limit",
        integer(0),
        default=10,
    )
    auth_failure_window: float = setting(
        "seconds over which failed AUTH attempts are counted", seconds, default=600.0
    )
    spool_sync: str = setting(
        "syncfs | fsync; default: syncfs where the system has it",
        choice("syncfs", "fsync"),
        default="",
    )
    state_store: str = setting(
        "sqlite:PATH or redis://HOST:PORT/DB; default sqlite:<spool>/state.sqlite",
        state_store,
        default="",
    )


@dataclass(frozen=True)
class Matrix:
    """One boolean per (sender kind -> recipient kind) case."""

    local_to_local: bool = setting("mail from a local sender to a local recipient", boolean)
    local_to_external: bool = setting("from a local sender to an external recipient", boolean)
    external_to_local: bool = setting("from an external sender to a local recipient", boolean)
    external_to_external: bool = setting("from an external sender to an external one", boolean)

    def get(self, sender: Kind, recipient: Kind) -> bool:
        return bool(getattr(self, f"{sender}_to_{recipient}"))


MATRIX_KEYS = tuple(f.name for f in fields(Matrix))
ALL_ALLOWED = Matrix(True, True, True, True)
NO_AUTH = Matrix(False, False, False, False)
INTERNET_AUTH = Matrix(True, True, False, True)
"""Require AUTH for everything except mail from outside to our routes (a backup MX's job)."""


@dataclass(frozen=True)
class IPRange:
    name: str = setting("shown in logs; unique", text, unique="when_read")
    networks: tuple[IPNetwork, ...] = setting(
        "IP addresses or networks", v.NETWORKS, key="addresses"
    )
    allow: Matrix = setting("may the mail be sent at all", section=Matrix, default=ALL_ALLOWED)
    require_auth: Matrix = setting("must the client log in", section=Matrix, default=INTERNET_AUTH)
    allow_etrn: bool = setting(
        "RFC 1985 ETRN; default: only ranges made of loopback addresses",
        v.etrn_flag,
        default=False,
        needs=("networks",),
        derive=v.loopback_only,
    )


DEFAULT_IP_RANGES: tuple[IPRange, ...] = (
    IPRange(
        name="My computer",
        networks=(ipaddress.ip_network("127.0.0.1/32"), ipaddress.ip_network("::1/128")),
        allow=ALL_ALLOWED,
        require_auth=NO_AUTH,
        allow_etrn=True,
    ),
    IPRange(
        name="Internet",
        networks=(ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")),
        allow=ALL_ALLOWED,
        require_auth=INTERNET_AUTH,
    ),
)


@dataclass(frozen=True)
class Account:
    username: str = setting("the login name; unique", text, unique="when_read")
    password_hash: bytes = setting(
        "a bcrypt hash ($2a$, $2b$ or $2y$)",
        v.password_hash,
        refused=(("password", "plain passwords are refused; use password_hash (bcrypt)"),),
    )


@dataclass(frozen=True)
class Authentication:
    username: str = setting("the login name at the target", text)
    password: str = setting(
        "password, or password_file (a file holding it): exactly one",
        read_keys=v.password,
        keys=("password", "password_file"),
    )
    allow_plaintext: bool = setting(
        "send the password over an unencrypted connection", boolean, default=False
    )


@dataclass(frozen=True)
class VerifyRecipients:
    """Recipient verification (callouts to the target at RCPT), for ``addresses: all``."""

    callout: bool = setting("ask the target at RCPT time", boolean, default=True)
    sender: str = setting("MAIL FROM of the callout; '' = the null sender <>", text, default="")
    when_unreachable: str = setting(
        "accept | accept_known", choice("accept", "accept_known"), default="accept"
    )
    positive_ttl: float = setting(
        "seconds a confirmed address is remembered", seconds, default=2678400.0
    )
    negative_ttl: float = setting(
        "seconds a refused address is remembered", seconds, default=10800.0
    )
    timeout: float = setting("seconds for the whole callout", seconds, default=10.0)


@dataclass(frozen=True, kw_only=True)
class Route:
    domain: str = setting(
        "lower case, no trailing dot; '*.example.org' for subdomains; unique",
        v.route_domain,
        unique="after_item",
    )
    use_mx: bool = setting(
        "the targets are the domain's MX hosts more preferred than we are", boolean, default=False
    )
    targets: tuple[Target, ...] = setting(
        "the primary, or a list tried in order: host, host:port, [IPv6]:port",
        v.targets,
        key="target_host",
        needs=("port", "use_mx"),
        derive=v.no_targets,
    )
    port: int = setting(
        "the targets' port unless one says otherwise", integer(1, 65535), default=25
    )
    treat_recipient_as: Kind = setting("local | external", choice(*KINDS), default="local")
    treat_sender_as: Kind = setting("local | external", choice(*KINDS), default="external")
    addresses: AddressList = setting(
        "all | a list of addresses | {file: path}", v.address_list, factory=AddressList
    )
    retries: int = setting("retries after the first try fails", integer(0), default=100)
    minutes_between_retries: int = setting("the retry interval", integer(1), default=15)
    authentication: Authentication | None = setting(
        "log in (AUTH) to the target", section=Authentication, default=None, null=True
    )
    security: Security = setting(" | ".join(SECURITIES), choice(*SECURITIES), default="none")
    verify_certificate: bool = setting("check the target's certificate", boolean, default=True)
    ca_file: str | None = setting(
        "PEM CA certificates to trust instead of the system's",
        optional_file,
        default=None,
        null=True,
    )
    backoff: float = setting(
        "interval multiplier per retry; 1 = fixed interval", v.backoff, default=1.0
    )
    max_minutes_between_retries: int = setting(
        "cap for the backed-off interval", integer(1), default=240
    )
    max_queue_lifetime: float = setting(
        "seconds; 0 = no limit besides retries", seconds_or_off, default=0.0
    )
    verify_recipients: VerifyRecipients | None = setting(
        "callouts at RCPT (addresses: all only)", section=VerifyRecipients, default=None, null=True
    )
    accept_when_target_up: bool = setting(
        "false: 450 4.7.1 at RCPT while the target is known up", boolean, default=True
    )
    max_queued_messages: int = setting("per-route quota; 0 = none", integer(0), default=0)
    allow_8bit_conversion: bool = setting(
        "8-bit mail to a target without 8BITMIME: convert (true) or bounce 5.6.3",
        boolean,
        default=True,
    )


@dataclass(frozen=True, kw_only=True)
class DeliveryConfig:
    """How the outbound side behaves, for every route."""

    # Declared, and so read, first: check-config has always reported its problem before the
    # others of this section.  (Keyword-only, so no caller can mistake the order.)
    helo_name: str = setting(
        "the name we give in EHLO; empty: server.hostname", v.host_name, default=""
    )
    tick: float = setting("seconds between scheduler ticks", seconds, default=1.0)
    probe_interval: float = setting(
        "a target that is down is probed this often", seconds, default=30.0
    )
    quick_check_interval: float = setting(
        "seconds between connect-only checks of a down target; 0 = off",
        seconds_or_off,
        default=2.0,
    )
    quick_check_for: float = setting(
        "seconds of an outage with quick checks; then probes only", seconds, default=3600.0
    )
    connect_timeout: float = setting("seconds to wait for the connection", seconds, default=30.0)
    reply_timeout: float = setting("seconds to wait for each SMTP reply", seconds, default=300.0)
    max_connections_per_target: int = setting(
        "Postfix: default_destination_concurrency_limit", integer(1, 1000), default=20
    )
    max_messages_per_connection: int = setting(
        "messages sent over one connection", integer(1, 100000), default=100
    )
    dns_servers: tuple[tuple[str, int], ...] = setting(
        "'address' or 'address:port'; empty: the system's resolv.conf",
        v.DNS_SERVERS,
        default=(),
        null=True,
    )
    delay_warning: float = setting(
        "seconds until the sender gets a delay notice; 0 = off", seconds_or_off, default=0.0
    )
    source_address: str = setting(
        "local IP address outbound connections come from; empty: the system's choice",
        v.source_address,
        default="",
        null=True,
    )


@dataclass(frozen=True)
class ManholeConfig:
    """An SSH shell into the running server, for operators (key authentication only)."""

    authorized_keys: str = setting("OpenSSH public keys, one a line", readable_file)
    listen: str = setting("a Twisted endpoint", text, default="tcp:2222:interface=127.0.0.1")
    host_key: str = setting(
        "default: <spool>/manhole_host_key (generated on first start)", text, default=""
    )


@dataclass(frozen=True)
class MetricsConfig:
    """A Prometheus text-format endpoint (``/metrics``)."""

    listen: str = setting("a Twisted endpoint", text, default="tcp:9125:interface=127.0.0.1")


@dataclass(frozen=True, kw_only=True)
class Config:
    source: str  # the file name; not a YAML key
    # Legal but probably wrong (one line each, like errors); not a YAML key.  check-config
    # prints them, the server logs them.
    warnings: tuple[str, ...] = ()
    server: ServerConfig = setting(
        "how we present ourselves and what we accept", section=ServerConfig
    )
    ip_ranges: tuple[IPRange, ...] = setting(
        "what clients may do, by IP address",
        Items(
            IPRange,
            "a list of IP ranges",
            empty="must not be empty (no client could send anything); omit the key for the "
            "default ranges",
        ),
        default=DEFAULT_IP_RANGES,
    )
    accounts: tuple[Account, ...] = setting(
        "who may log in with SMTP AUTH", Items(Account, "a list of accounts"), default=(), null=True
    )
    routes: tuple[Route, ...] = setting(
        "the domains we accept mail for, and where we deliver it",
        Items(Route, "a list of routes (write [] for none)"),
    )
    delivery: DeliveryConfig = setting(
        "how we hand mail to the targets", section=DeliveryConfig, factory=DeliveryConfig, null=True
    )
    manhole: ManholeConfig | None = setting(
        "an SSH shell into the server", section=ManholeConfig, default=None, null=True
    )
    metrics: MetricsConfig | None = setting(
        "a Prometheus endpoint", section=MetricsConfig, default=None, null=True
    )
    checks: ChecksConfig = setting(
        "inbound filtering: DNSBL, SPF, DKIM, ARC, greylisting",
        section=ChecksConfig,
        factory=ChecksConfig,
        null=True,
    )

    @property
    def state_store(self) -> str:
        """Where the verification cache and greylisting live (``server.state_store``)."""
        return self.server.state_store or "sqlite:" + os.path.join(
            self.server.spool, "state.sqlite"
        )

    @property
    def control_socket(self) -> str:
        """The local admin socket (mode 0600) the ``mxbackup`` command talks to."""
        return self.server.control_socket or os.path.join(self.server.spool, "control.sock")

    @property
    def manhole_host_key(self) -> str:
        """Where the manhole's SSH host key is kept (created on first start)."""
        if self.manhole is None:
            return ""
        return self.manhole.host_key or os.path.join(self.server.spool, "manhole_host_key")
