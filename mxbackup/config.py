"""The operator's configuration: YAML in, frozen objects out.

Pure: no reactor, no network.  Every problem is reported as one line naming the file, the key
path and the reason, before anything listens.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import stat
from dataclasses import dataclass, field
from typing import Any, Literal, cast

import yaml

from mxbackup.names import DomainError, parse_domain

Kind = Literal["local", "external"]
Security = Literal["none", "ssl", "starttls", "starttls_required"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """One or more configuration problems; ``errors`` holds one line each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


@dataclass(frozen=True)
class TLSConfig:
    certificate: str
    key: str


@dataclass(frozen=True)
class ServerConfig:
    hostname: str
    listen: tuple[str, ...]
    spool: str
    tls: TLSConfig | None = None
    max_message_size: int = 26214400
    max_recipients: int = 1000
    max_connections: int = 500
    max_connections_per_ip: int = 20
    idle_timeout: float = 300.0
    max_received_headers: int = 50
    min_free_space: int = 104857600
    control_socket: str = ""  # default: <spool>/control.sock
    spool_sync: str = ""  # "syncfs" | "fsync"; default: syncfs where the system has it


@dataclass(frozen=True)
class Matrix:
    """One boolean per (sender kind -> recipient kind) case."""

    local_to_local: bool
    local_to_external: bool
    external_to_local: bool
    external_to_external: bool

    def get(self, sender: Kind, recipient: Kind) -> bool:
        return bool(getattr(self, f"{sender}_to_{recipient}"))


@dataclass(frozen=True)
class IPRange:
    name: str
    networks: tuple[IPNetwork, ...]
    allow: Matrix
    require_auth: Matrix
    allow_etrn: bool = False  # RFC 1985 ETRN; default: only ranges made of loopback addresses


@dataclass(frozen=True)
class Account:
    username: str
    password_hash: bytes


@dataclass(frozen=True)
class AddressList:
    """``kind`` is "all" (no list), "list" (inline) or "file" (one address a line)."""

    kind: Literal["all", "list", "file"] = "all"
    entries: frozenset[str] = frozenset()
    file: str | None = None

    def allows(self, address: str) -> bool:
        return self.kind == "all" or address.lower() in self.entries


@dataclass(frozen=True)
class Target:
    host: str
    port: int


@dataclass(frozen=True)
class Authentication:
    username: str
    password: str
    allow_plaintext: bool = False


@dataclass(frozen=True)
class Route:
    domain: str  # lower case, no trailing dot; "*.example.org" for subdomains
    targets: tuple[Target, ...]
    port: int = 25
    treat_recipient_as: Kind = "local"
    treat_sender_as: Kind = "external"
    addresses: AddressList = field(default_factory=AddressList)
    retries: int = 100
    minutes_between_retries: int = 15
    authentication: Authentication | None = None
    security: Security = "none"
    verify_certificate: bool = True
    ca_file: str | None = None
    backoff: float = 1.0  # interval multiplier per retry; 1 = fixed interval (the seed's rule)
    max_minutes_between_retries: int = 240  # cap for the backed-off interval
    max_queue_lifetime: float = 0.0  # seconds; 0 = no limit besides retries


@dataclass(frozen=True)
class DeliveryConfig:
    """How the outbound side behaves, for every route."""

    tick: float = 1.0  # seconds between scheduler ticks
    probe_interval: float = 30.0  # a target that is down is probed this often
    connect_timeout: float = 30.0
    reply_timeout: float = 300.0  # for every SMTP reply from the target
    max_connections_per_target: int = 20  # Postfix: default_destination_concurrency_limit
    max_messages_per_connection: int = 100
    helo_name: str = ""  # empty: server.hostname
    dns_servers: tuple[tuple[str, int], ...] = ()  # empty: the system's resolv.conf
    delay_warning: float = 0.0  # seconds after which the sender gets a delay notice; 0 = off


@dataclass(frozen=True)
class ManholeConfig:
    """An SSH shell into the running server, for operators (key authentication only)."""

    authorized_keys: str
    listen: str = "tcp:2222:interface=127.0.0.1"
    host_key: str = ""  # default: <spool>/manhole_host_key (generated on first start)


@dataclass(frozen=True)
class MetricsConfig:
    """A Prometheus text-format endpoint (``/metrics``)."""

    listen: str = "tcp:9125:interface=127.0.0.1"


@dataclass(frozen=True)
class Config:
    source: str
    server: ServerConfig
    ip_ranges: tuple[IPRange, ...]
    accounts: tuple[Account, ...]
    routes: tuple[Route, ...]
    delivery: DeliveryConfig = field(default_factory=DeliveryConfig)
    manhole: ManholeConfig | None = None
    metrics: MetricsConfig | None = None

    @property
    def control_socket(self) -> str:
        """The local admin socket (mode 0600) the ``mxbackup`` command talks to."""
        import os

        return self.server.control_socket or os.path.join(self.server.spool, "control.sock")

    @property
    def manhole_host_key(self) -> str:
        """Where the manhole's SSH host key is kept (created on first start)."""
        import os

        if self.manhole is None:
            return ""
        return self.manhole.host_key or os.path.join(self.server.spool, "manhole_host_key")


# --------------------------------------------------------------------------------------------
# Loading.  `load` reads and parses the YAML; `parse` turns plain data into the objects above.
# A `_Reader` carries the file name and collects every problem, so the operator sees them all
# at once; each reader function returns a usable placeholder after reporting, and nothing is
# returned to the caller unless the error list is empty.
# --------------------------------------------------------------------------------------------

ALL_ALLOWED = Matrix(True, True, True, True)
NO_AUTH = Matrix(False, False, False, False)
INTERNET_AUTH = Matrix(True, True, False, True)
"""Require AUTH for everything except mail from outside to our routes (a backup MX's job)."""

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

KINDS = ("local", "external")
SECURITIES = ("none", "ssl", "starttls", "starttls_required")
MATRIX_KEYS = ("local_to_local", "local_to_external", "external_to_local", "external_to_external")

_MISSING: Any = object()
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")
_BCRYPT = re.compile(r"\$2[aby]\$(?:0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
_PORT = re.compile(r"[0-9]{1,5}")
_BRACKETED = re.compile(r"\[([^\]]*)\](?::(.*))?")


def load(path: str) -> Config:
    """Read and parse the YAML file at ``path``; raise `ConfigError` listing every problem."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError([_one_line(f"{path}: file not found")]) from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError([_one_line(f"{path}: cannot read the file: {reason}")]) from None
    try:
        data = yaml.safe_load(raw)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([_one_line(f"{path}: {_yaml_problem(exc)}")]) from None
    except yaml.YAMLError as exc:  # e.g. ReaderError: bad encoding or a control character
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        where = getattr(exc, "position", None)
        at = f" at character {where}" if isinstance(where, int) else ""
        raise ConfigError([_one_line(f"{path}: not valid YAML text{at}: {first_line}")]) from None
    except RecursionError:
        raise ConfigError([f"{_one_line(path)}: YAML is nested too deeply"]) from None
    except (ValueError, OverflowError) as exc:  # e.g. an impossible date, a 5000-digit number
        raise ConfigError([_one_line(f"{path}: YAML value cannot be read: {exc}")]) from None
    return parse(data, path)


def parse(data: object, source: str) -> Config:
    """Turn the data of a YAML document into a `Config`; ``source`` names it in errors."""
    r = _Reader(source)
    if not isinstance(data, dict):
        what = "the file is empty" if data is None else f"got {_show(data)}"
        r.errors.append(
            _one_line(
                f"{source}: the top level must be a mapping with the keys server, ip_ranges, "
                f"accounts and routes; {what}"
            )
        )
        raise ConfigError(r.errors)
    top = _Map.open(
        r,
        data,
        "",
        ("server", "ip_ranges", "accounts", "routes", "delivery", "manhole", "metrics"),
    )
    assert top is not None  # data is a dict
    server = _server(r, top.required("server"), "server")
    ip_ranges = DEFAULT_IP_RANGES
    if top.has("ip_ranges"):
        ip_ranges = _ip_ranges(r, top.get("ip_ranges"), "ip_ranges")
    accounts = _accounts(r, top.get("accounts"), "accounts")
    routes = _routes(r, top.required("routes"), "routes")
    delivery = _delivery(r, top.get("delivery"), "delivery")
    manhole = _manhole(r, top.get("manhole"), "manhole")
    metrics = _metrics(r, top.get("metrics"), "metrics")
    if r.errors or server is None:
        raise ConfigError(r.errors)
    return Config(
        source=source,
        server=server,
        ip_ranges=ip_ranges,
        accounts=accounts,
        routes=routes,
        delivery=delivery,
        manhole=manhole,
        metrics=metrics,
    )


# --- the sections ---------------------------------------------------------------------------


def _server(r: _Reader, value: object, path: str) -> ServerConfig | None:
    m = _Map.open(
        r,
        value,
        path,
        (
            "hostname",
            "listen",
            "spool",
            "tls",
            "max_message_size",
            "max_recipients",
            "max_connections",
            "max_connections_per_ip",
            "idle_timeout",
            "max_received_headers",
            "min_free_space",
            "control_socket",
            "spool_sync",
        ),
    )
    if m is None:
        return None
    hostname = ""
    if (raw := m.required("hostname")) is not _MISSING:
        hostname = _host_name(r, raw, m.at("hostname"))
    listen: tuple[str, ...] = ()
    if (raw := m.required("listen")) is not _MISSING:
        listen = _listen(r, raw, m.at("listen"))
    d = ServerConfig
    return ServerConfig(
        hostname=hostname,
        listen=listen,
        spool=m.text("spool"),
        tls=_tls(r, m.get("tls"), m.at("tls")),
        max_message_size=m.integer("max_message_size", d.max_message_size, 1),
        max_recipients=m.integer("max_recipients", d.max_recipients, 1),
        max_connections=m.integer("max_connections", d.max_connections, 1),
        max_connections_per_ip=m.integer("max_connections_per_ip", d.max_connections_per_ip, 1),
        idle_timeout=m.seconds("idle_timeout", d.idle_timeout),
        max_received_headers=m.integer("max_received_headers", d.max_received_headers, 1),
        min_free_space=m.integer("min_free_space", d.min_free_space, 0),
        control_socket=m.text("control_socket") if m.has("control_socket") else "",
        spool_sync=m.choice("spool_sync", ("syncfs", "fsync"), "") if m.has("spool_sync") else "",
    )


def _host_name(r: _Reader, value: object, path: str) -> str:
    if not isinstance(value, str):
        r.error(path, f"must be a host name, got {_show(value)}")
        return ""
    name, problem = _domain_name(value, wildcard=False)
    if problem:
        r.error(path, f"must be a valid host name: {problem}, got {_show(value)}")
    return name


def _listen(r: _Reader, value: object, path: str) -> tuple[str, ...]:
    items = _list(r, value, path, "a list of Twisted endpoint descriptions such as ['tcp:25']")
    if items is None:
        return ()
    if not items:
        r.error(path, "needs at least one endpoint description, such as 'tcp:25'")
    endpoints = []
    for i, item in enumerate(items):
        if isinstance(item, str) and item.strip():
            endpoints.append(item)
        else:
            r.error(f"{path}[{i}]", f"must be a Twisted endpoint description, got {_show(item)}")
    return tuple(endpoints)


def _tls(r: _Reader, value: object, path: str) -> TLSConfig | None:
    if value is _MISSING or value is None:
        return None
    m = _Map.open(r, value, path, ("certificate", "key"))
    if m is None:
        return None
    return TLSConfig(certificate=m.readable_file("certificate"), key=m.readable_file("key"))


def _ip_ranges(r: _Reader, value: object, path: str) -> tuple[IPRange, ...]:
    items = _list(r, value, path, "a list of IP ranges")
    if items is None:
        return ()
    if not items:
        r.error(
            path,
            "must not be empty (no client could send anything); omit the key for the "
            "default ranges",
        )
    ranges = []
    first_seen: dict[str, str] = {}
    for i, item in enumerate(items):
        item_path = f"{path}[{i}]"
        m = _Map.open(
            r, item, item_path, ("name", "addresses", "allow", "require_auth", "allow_etrn")
        )
        if m is None:
            continue
        name = m.text("name")
        if name in first_seen:
            r.error(m.at("name"), f"duplicate of {first_seen[name]} ({_show(name)})")
        elif name:
            first_seen[name] = m.at("name")
        networks: tuple[IPNetwork, ...] = ()
        if (raw := m.required("addresses")) is not _MISSING:
            networks = _networks(r, raw, m.at("addresses"))
        allow = _matrix(r, m.get("allow"), m.at("allow"), ALL_ALLOWED)
        require_auth = _matrix(r, m.get("require_auth"), m.at("require_auth"), INTERNET_AUTH)
        loopback_only = bool(networks) and all(n.is_loopback for n in networks)
        allow_etrn = m.boolean("allow_etrn", loopback_only)
        ranges.append(IPRange(name, networks, allow, require_auth, allow_etrn))
    return tuple(ranges)


def _networks(r: _Reader, value: object, path: str) -> tuple[IPNetwork, ...]:
    items = _list(r, value, path, "a list of IP addresses or networks such as '192.0.2.0/24'")
    if items is None:
        return ()
    if not items:
        r.error(path, "needs at least one IP address or network, such as '192.0.2.0/24'")
    networks = []
    for i, item in enumerate(items):
        try:
            if not isinstance(item, str):
                raise ValueError
            networks.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            r.error(
                f"{path}[{i}]",
                f"must be an IP address or network such as '192.0.2.0/24', got {_show(item)}",
            )
    return tuple(networks)


def _matrix(r: _Reader, value: object, path: str, default: Matrix) -> Matrix:
    if value is _MISSING:
        return default
    m = _Map.open(r, value, path, MATRIX_KEYS)
    if m is None:
        return default
    flags = [m.boolean(key, getattr(default, key)) for key in MATRIX_KEYS]
    return Matrix(*flags)


def _accounts(r: _Reader, value: object, path: str) -> tuple[Account, ...]:
    if value is _MISSING or value is None:
        return ()
    items = _list(r, value, path, "a list of accounts")
    if items is None:
        return ()
    refused = {"password": "plain passwords are refused; use password_hash (bcrypt)"}
    accounts = []
    first_seen: dict[str, str] = {}
    for i, item in enumerate(items):
        m = _Map.open(r, item, f"{path}[{i}]", ("username", "password_hash"), refused)
        if m is None:
            continue
        username = m.text("username")
        if username in first_seen:
            r.error(m.at("username"), f"duplicate of {first_seen[username]} ({_show(username)})")
        elif username:
            first_seen[username] = m.at("username")
        password_hash = b""
        if (raw := m.required("password_hash")) is not _MISSING:
            # The value is never echoed: it might be a plain password pasted by mistake.
            if isinstance(raw, str) and _BCRYPT.fullmatch(raw):
                password_hash = raw.encode("ascii")
            else:
                r.error(
                    m.at("password_hash"),
                    "must be a bcrypt hash (60 characters starting with $2a$, $2b$ or $2y$), "
                    "such as the output of: python -c 'import bcrypt; "
                    "print(bcrypt.hashpw(input().encode(), bcrypt.gensalt()).decode())'",
                )
        accounts.append(Account(username, password_hash))
    return tuple(accounts)


def _routes(r: _Reader, value: object, path: str) -> tuple[Route, ...]:
    if value is _MISSING:
        return ()
    items = _list(r, value, path, "a list of routes (write [] for none)")
    if items is None:
        return ()
    routes = []
    first_seen: dict[str, str] = {}
    for i, item in enumerate(items):
        route = _route(r, item, f"{path}[{i}]")
        if route is None:
            continue
        if route.domain in first_seen:
            r.error(
                f"{path}[{i}].domain",
                f"duplicate of {first_seen[route.domain]} ({_show(route.domain)})",
            )
        elif route.domain:
            first_seen[route.domain] = f"{path}[{i}].domain"
        routes.append(route)
    return tuple(routes)


def _route(r: _Reader, value: object, path: str) -> Route | None:
    m = _Map.open(
        r,
        value,
        path,
        (
            "domain",
            "target_host",
            "port",
            "treat_recipient_as",
            "treat_sender_as",
            "addresses",
            "retries",
            "minutes_between_retries",
            "authentication",
            "security",
            "verify_certificate",
            "ca_file",
            "backoff",
            "max_minutes_between_retries",
            "max_queue_lifetime",
        ),
    )
    if m is None:
        return None
    domain = ""
    if (raw := m.required("domain")) is not _MISSING:
        domain = _route_domain(r, raw, m.at("domain"))
    port = m.integer("port", 25, 1, 65535)
    targets: tuple[Target, ...] = ()
    if (raw := m.required("target_host")) is not _MISSING:
        targets = _targets(r, raw, m.at("target_host"), port)
    return Route(
        domain=domain,
        targets=targets,
        port=port,
        treat_recipient_as=cast(Kind, m.choice("treat_recipient_as", KINDS, "local")),
        treat_sender_as=cast(Kind, m.choice("treat_sender_as", KINDS, "external")),
        addresses=_address_list(r, m.get("addresses"), m.at("addresses")),
        retries=m.integer("retries", 100, 0),
        minutes_between_retries=m.integer("minutes_between_retries", 15, 1),
        authentication=_authentication(r, m.get("authentication"), m.at("authentication")),
        security=cast(Security, m.choice("security", SECURITIES, "none")),
        verify_certificate=m.boolean("verify_certificate", True),
        ca_file=m.optional_readable_file("ca_file"),
        backoff=_backoff(r, m),
        max_minutes_between_retries=m.integer("max_minutes_between_retries", 240, 1),
        max_queue_lifetime=_lifetime(r, m),
    )


def _backoff(r: _Reader, m: _Map) -> float:
    value = m.get("backoff")
    if value is _MISSING:
        return 1.0
    if isinstance(value, int | float) and not isinstance(value, bool) and 1 <= value <= 10:
        return float(value)
    r.error(m.at("backoff"), f"must be a number from 1 (fixed interval) to 10, got {_show(value)}")
    return 1.0


def _lifetime(r: _Reader, m: _Map) -> float:
    value = m.get("max_queue_lifetime")
    if value is _MISSING or value == 0:
        return 0.0
    return m.seconds("max_queue_lifetime", 0.0)


def _delivery(r: _Reader, value: object, path: str) -> DeliveryConfig:
    if value is _MISSING or value is None:
        return DeliveryConfig()
    keys = (
        "tick",
        "probe_interval",
        "connect_timeout",
        "reply_timeout",
        "max_connections_per_target",
        "max_messages_per_connection",
        "helo_name",
        "dns_servers",
        "delay_warning",
    )
    m = _Map.open(r, value, path, keys)
    if m is None:
        return DeliveryConfig()
    d = DeliveryConfig
    helo = ""
    if m.has("helo_name"):
        helo = _host_name(r, m.get("helo_name"), m.at("helo_name"))
    warning = m.get("delay_warning")
    return DeliveryConfig(
        tick=m.seconds("tick", d.tick),
        probe_interval=m.seconds("probe_interval", d.probe_interval),
        connect_timeout=m.seconds("connect_timeout", d.connect_timeout),
        reply_timeout=m.seconds("reply_timeout", d.reply_timeout),
        max_connections_per_target=m.integer(
            "max_connections_per_target", d.max_connections_per_target, 1, 1000
        ),
        max_messages_per_connection=m.integer(
            "max_messages_per_connection", d.max_messages_per_connection, 1, 100000
        ),
        helo_name=helo,
        dns_servers=_dns_servers(r, m.get("dns_servers"), m.at("dns_servers")),
        delay_warning=0.0 if warning is _MISSING or warning == 0 else m.seconds("delay_warning", 0),
    )


def _manhole(r: _Reader, value: object, path: str) -> ManholeConfig | None:
    if value is _MISSING or value is None:
        return None
    m = _Map.open(r, value, path, ("listen", "authorized_keys", "host_key"))
    if m is None:
        return None
    keys = m.readable_file("authorized_keys")
    listen = m.text("listen") if m.has("listen") else ManholeConfig.listen
    host_key = m.text("host_key") if m.has("host_key") else ""
    return ManholeConfig(authorized_keys=keys, listen=listen, host_key=host_key)


def _metrics(r: _Reader, value: object, path: str) -> MetricsConfig | None:
    if value is _MISSING or value is None:
        return None
    m = _Map.open(r, value, path, ("listen",))
    if m is None:
        return None
    return MetricsConfig(listen=m.text("listen") if m.has("listen") else MetricsConfig.listen)


def _dns_servers(r: _Reader, value: object, path: str) -> tuple[tuple[str, int], ...]:
    if value is _MISSING or value is None:
        return ()
    if not isinstance(value, list):
        r.error(path, f"must be a list of 'address' or 'address:port', got {_show(value)}")
        return ()
    servers = []
    for i, item in enumerate(value):
        target, _ = _target(item, 53) if isinstance(item, str) else (None, "")
        if target is None or not _is_ip(target.host):
            r.error(
                f"{path}[{i}]", f"must be an IP address with an optional :port, got {_show(item)}"
            )
            continue
        servers.append((target.host, target.port))
    return tuple(servers)


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _route_domain(r: _Reader, value: object, path: str) -> str:
    if not isinstance(value, str):
        r.error(path, f"must be a domain name such as 'example.com', got {_show(value)}")
        return ""
    name, problem = _domain_name(value, wildcard=True)
    if problem:
        r.error(path, f"must be a domain name such as 'example.com': {problem}, got {_show(value)}")
    return name


def _targets(r: _Reader, value: object, path: str, port: int) -> tuple[Target, ...]:
    if isinstance(value, str):
        entries: list[tuple[object, str]] = [(value, path)]
    elif isinstance(value, list) and value:
        entries = [(item, f"{path}[{i}]") for i, item in enumerate(value)]
    else:
        r.error(path, f"must be a host or a non-empty list of hosts, got {_show(value)}")
        return ()
    targets = []
    for item, item_path in entries:
        target, problem = _target(item, port) if isinstance(item, str) else (None, "")
        if target is None:
            r.error(
                item_path,
                "must be 'host', 'host:port', '[IPv6 address]:port' or an IP address"
                + (f" ({problem})" if problem else "")
                + f", got {_show(item)}",
            )
        else:
            targets.append(target)
    return tuple(targets)


def _target(text: str, default_port: int) -> tuple[Target | None, str]:
    """Parse one target_host entry; returns (target, "") or (None, reason)."""
    port_text: str | None
    if text.startswith("["):
        match = _BRACKETED.fullmatch(text)
        if match is None:
            return None, "unbalanced brackets"
        host, port_text = match[1], match[2]
        try:
            host = str(ipaddress.IPv6Address(host))
        except ValueError:
            return None, "brackets must hold an IPv6 address"
    else:
        try:
            return Target(str(ipaddress.ip_address(text)), default_port), ""
        except ValueError:
            pass
        host, colon, port_text = text.partition(":")
        if not colon:
            port_text = None
        elif ":" in port_text:
            return None, "write an IPv6 address with a port as [address]:port"
        try:
            host = str(ipaddress.IPv4Address(host))
        except ValueError:
            host, problem = _domain_name(host, wildcard=False)
            if problem:
                return None, problem
    if port_text is None:
        return Target(host, default_port), ""
    if not _PORT.fullmatch(port_text) or not 1 <= int(port_text) <= 65535:
        return None, "the port must be from 1 to 65535"
    return Target(host, int(port_text)), ""


def _address_list(r: _Reader, value: object, path: str) -> AddressList:
    if value is _MISSING or (isinstance(value, str) and value == "all"):
        return AddressList()
    if isinstance(value, list):
        if not value:
            r.error(path, "must not be an empty list (write 'all' to accept every address)")
        found = [_address(r, item, f"{path}[{i}]") for i, item in enumerate(value)]
        return AddressList(kind="list", entries=frozenset(a for a in found if a))
    if isinstance(value, dict):
        m = _Map.open(r, value, path, ("file",))
        assert m is not None
        filename = m.text("file")
        text = _read_text(r, m.at("file"), filename) if filename else None
        entries = []
        for number, line in enumerate((text or "").splitlines(), start=1):
            line = line.strip()
            if line and not line.startswith("#"):
                entries.append(_address(r, line, m.at("file"), f"line {number}: "))
        return AddressList(kind="file", entries=frozenset(a for a in entries if a), file=filename)
    r.error(
        path,
        f"must be 'all', a list of addresses or {{file: path}}, got {_show(value)}",
    )
    return AddressList()


def _address(r: _Reader, value: object, path: str, where: str = "") -> str:
    if isinstance(value, str):
        local, _, domain = value.partition("@")
        if value.count("@") == 1 and local and domain and not any(c.isspace() for c in value):
            return value.lower()
    r.error(path, f"{where}must be an email address with exactly one '@', got {_show(value)}")
    return ""


def _authentication(r: _Reader, value: object, path: str) -> Authentication | None:
    if value is _MISSING or value is None:
        return None
    m = _Map.open(r, value, path, ("username", "password", "password_file", "allow_plaintext"))
    if m is None:
        return None
    username = m.text("username")
    password = ""
    if m.has("password") and m.has("password_file"):
        r.error(path, "give either password or password_file, not both")
    elif m.has("password"):
        raw = m.get("password")
        if isinstance(raw, str) and raw:
            password = raw
        else:  # never echo what might be a secret
            r.error(m.at("password"), f"must be a non-empty string (quote it), got {_kind(raw)}")
    elif m.has("password_file"):
        filename = m.text("password_file")
        text = _read_text(r, m.at("password_file"), filename) if filename else None
        if text is not None:
            password = text.removesuffix("\n").removesuffix("\r")
            if not password:
                r.error(m.at("password_file"), f"the file {_show(filename)} is empty")
    else:
        r.error(path, "needs password or password_file")
    return Authentication(username, password, m.boolean("allow_plaintext", False))


# --- the tiny reader ------------------------------------------------------------------------


class _Reader:
    """Collects problems, each as one line: ``<source>: <key path>: <reason>``."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[str] = []

    def error(self, path: str, reason: str) -> None:
        self.errors.append(_one_line(f"{self.source}: {path}: {reason}"))


class _Map:
    """A YAML mapping being read: unknown keys are reported once, on opening."""

    def __init__(self, reader: _Reader, path: str, data: dict[str, object]) -> None:
        self.r = reader
        self.path = path
        self.data = data

    @classmethod
    def open(
        cls,
        r: _Reader,
        value: object,
        path: str,
        known: tuple[str, ...],
        refused: dict[str, str] | None = None,
    ) -> _Map | None:
        """Check ``value`` is a mapping with only ``known`` keys; None if not a mapping."""
        if not isinstance(value, dict):
            r.error(path or "(top level)", f"must be a mapping, got {_show(value)}")
            return None
        data: dict[str, object] = {}
        for key, item in value.items():
            if isinstance(key, str) and key in known:
                data[key] = item
            elif refused and isinstance(key, str) and key in refused:
                r.error(_join(path, key), refused[key])
            else:
                r.error(_join(path, key), "unknown key")
        return cls(r, path, data)

    def at(self, key: str) -> str:
        return _join(self.path, key)

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str) -> object:
        return self.data.get(key, _MISSING)

    def required(self, key: str) -> object:
        if key not in self.data:
            self.r.error(self.at(key), "required key is missing")
        return self.get(key)

    def text(self, key: str) -> str:
        """A required non-empty string; "" after reporting a problem."""
        value = self.required(key)
        if value is _MISSING:
            return ""
        if not isinstance(value, str) or not value.strip():
            self.r.error(self.at(key), f"must be a non-empty string, got {_show(value)}")
            return ""
        return value

    def integer(self, key: str, default: int, minimum: int, maximum: int | None = None) -> int:
        value = self.get(key)
        if value is _MISSING:
            return default
        ok = isinstance(value, int) and not isinstance(value, bool) and value >= minimum
        if ok and (maximum is None or value <= maximum):
            return cast(int, value)
        limits = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"
        self.r.error(self.at(key), f"must be an integer {limits}, got {_show(value)}")
        return default

    def seconds(self, key: str, default: float) -> float:
        value = self.get(key)
        if value is _MISSING:
            return default
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                seconds = float(value)
            except OverflowError:
                seconds = math.inf
            if math.isfinite(seconds) and seconds > 0:
                return seconds
        self.r.error(self.at(key), f"must be a number of seconds > 0, got {_show(value)}")
        return default

    def boolean(self, key: str, default: bool) -> bool:
        value = self.get(key)
        if value is _MISSING:
            return default
        if isinstance(value, bool):
            return value
        self.r.error(self.at(key), f"must be true or false, got {_show(value)}")
        return default

    def choice(self, key: str, choices: tuple[str, ...], default: str) -> str:
        value = self.get(key)
        if value is _MISSING:
            return default
        if isinstance(value, str) and value in choices:
            return value
        self.r.error(self.at(key), f"must be one of {' | '.join(choices)}, got {_show(value)}")
        return default

    def readable_file(self, key: str) -> str:
        """A required file name whose file can be opened for reading now."""
        filename = self.text(key)
        if filename:
            _check_readable(self.r, self.at(key), filename)
        return filename

    def optional_readable_file(self, key: str) -> str | None:
        value = self.get(key)
        if value is _MISSING or value is None:
            return None
        return self.readable_file(key) or None


# --- small pure helpers ---------------------------------------------------------------------


def _list(r: _Reader, value: object, path: str, what: str) -> list[object] | None:
    if isinstance(value, list):
        return value
    r.error(path, f"must be {what}, got {_show(value)}")
    return None


def _check_readable(r: _Reader, path: str, filename: str) -> None:
    _read_text(r, path, filename, decode=False)


def _read_text(r: _Reader, path: str, filename: str, decode: bool = True) -> str | None:
    """The content of a regular file (not a pipe or device, which could block us)."""
    try:
        if not stat.S_ISREG(os.stat(filename).st_mode):
            r.error(path, f"{_show(filename)} is not a regular file")
            return None
        with open(filename, "rb") as f:  # opening proves we may read it
            return f.read().decode("utf-8") if decode else ""
    except UnicodeDecodeError:
        r.error(path, f"{_show(filename)} is not UTF-8 text")
    except (OSError, ValueError) as exc:
        r.error(path, f"cannot read {_show(filename)}: {_os_reason(exc)}")
    return None


def _os_reason(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file (relative paths start from the current directory)"
    return getattr(exc, "strerror", None) or str(exc)


def _domain_name(text: str, *, wildcard: bool) -> tuple[str, str]:
    """(name, "") normalised by ``names.parse_domain`` (IDNA, no all-digit last label), or
    ("", reason)."""
    try:
        return parse_domain(text, wildcard=wildcard, idna=True, numeric_tld=False), ""
    except DomainError as e:
        return "", str(e)


def _join(path: str, key: object) -> str:
    name = key if isinstance(key, str) and _PLAIN_KEY.fullmatch(key) else _show(key)
    return f"{path}.{name}" if path else str(name)


def _show(value: object) -> str:
    """A short, one-line description of any YAML value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 64 else "a very large integer"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 80 else repr(value[:80]) + "..."
    return _kind(value)


def _kind(value: object) -> str:
    """What sort of value this is, without showing it (for secrets and containers)."""
    kinds = {dict: "a mapping", list: "a list", str: "a string", bool: "true or false"}
    for cls, name in kinds.items():
        if isinstance(value, cls):
            return name
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return "a number"
    return f"a value of type {type(value).__name__}"


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = exc.problem or "invalid YAML"
    if exc.context:
        if problem.startswith("but "):
            problem = f"{exc.context}, {problem}"
        else:
            problem = f"{problem} ({exc.context})"
    return f"YAML syntax error{where}: {problem}"


def _one_line(text: str) -> str:
    """Escape anything that could break the line (newlines, other control characters)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
