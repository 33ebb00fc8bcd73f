"""Checks of a configuration that need more than its YAML: endpoints Twisted must parse, the
TLS certificate and key, addresses that would make us deliver to ourselves, and keys that
are legal but probably wrong.

``mxbackup check-config`` and the server run the same checks (``preflight``), so what the
first calls OK the second does not refuse.  Errors are one line each, ``file: key.path:
reason``, like the configuration's own; warnings the same, and they do not stop anything.
Nothing here listens or connects: endpoints are parsed, not bound.
"""

from __future__ import annotations

import os
import re
import socket
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import endpoints

from mxbackup.config import Config
from mxbackup.config.scalars import others_can_read
from mxbackup.inbound.passwords import cost_of
from mxbackup.outbound.nexthop import NextHop
from mxbackup.wire import tlsprofile

_ENDPOINT_ERRORS = (ValueError, KeyError, TypeError, IndexError)


@dataclass
class Report:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    tls_context: Any = None  # the server's, when it has a tls section that loads


class _NoReactor:
    """What an endpoint parser is given: it keeps a reactor, never uses it while parsing."""


def preflight(config: Config) -> Report:
    report = Report(warnings=list(config.warnings))
    say = _Say(config.source, report)
    for key, description in _listeners(config):
        _parse_endpoint(say, key, description)
    report.tls_context = _tls(say, config)
    if config.accounts and config.server.tls is None:
        say.warning(
            "accounts",
            "AUTH is offered only over TLS and server.tls is not set: no account can log in",
        )
    _own_targets(say, config)
    holds_secrets = config.accounts or any(r.authentication for r in config.routes)
    if holds_secrets and others_can_read(config.source):
        say.warning(
            "accounts" if config.accounts else "routes",
            f"{config.source} holds password hashes or passwords and every user of this host "
            "can read it: chmod o-r it (the package installs it 0640 root:mxbackup)",
        )
    costs = sorted({cost_of(a.password_hash) for a in config.accounts})
    if len(costs) > 1:
        say.warning(
            "accounts",
            f"password hashes of bcrypt costs {', '.join(map(str, costs))}: how long a failed "
            "AUTH takes tells accounts of one cost from the rest; hash them all at one cost",
        )
    _source_address(say, config.delivery.source_address)
    return report


def _source_address(say: _Say, address: str) -> None:
    """A source address this host does not have: every connection would fail."""
    if not address:
        return
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((address, 0))
    except OSError as e:
        say.warning(
            "delivery.source_address",
            f"{address} is not an address of this host ({e.strerror or e}): "
            "outbound connections will fail",
        )


class _Say:
    def __init__(self, source: str, report: Report) -> None:
        self.source = source
        self.report = report

    def error(self, key: str, reason: str) -> None:
        self.report.errors.append(f"{self.source}: {key}: {reason}")

    def warning(self, key: str, reason: str) -> None:
        self.report.warnings.append(f"{self.source}: {key}: {reason}")


def _listeners(config: Config) -> list[tuple[str, str]]:
    found = [(f"server.listen[{i}]", d) for i, d in enumerate(config.server.listen)]
    if config.manhole is not None:
        found.append(("manhole.listen", config.manhole.listen))
    if config.metrics is not None:
        found.append(("metrics.listen", config.metrics.listen))
    return found


def endpoint(reactor: Any, description: str) -> Any:
    """Twisted's endpoint for ``description``; ValueError with the reason when it has none."""
    try:
        return endpoints.serverFromString(reactor, description)
    except _ENDPOINT_ERRORS as e:
        raise ValueError(f"bad endpoint {description!r}: {e or type(e).__name__}") from None


def _parse_endpoint(say: _Say, key: str, description: str) -> None:
    try:
        endpoints.serverFromString(_NoReactor(), description)
    except IndexError:
        if "LISTEN_FDS" not in os.environ:
            return  # a systemd socket: it is inherited at start, not here (check-config)
        say.error(key, f"bad endpoint {description!r}: no such socket from systemd")
    except _ENDPOINT_ERRORS as e:
        say.error(key, f"bad endpoint {description!r}: {e}")


def _tls(say: _Say, config: Config) -> Any:
    tls = config.server.tls
    if tls is None:
        return None
    pairs = [(tls.certificate, tls.key)]
    if (tls.extra_certificate is None) != (tls.extra_key is None):
        say.error("server.tls", "extra_certificate and extra_key go together: give both")
        return None
    if tls.extra_certificate is not None and tls.extra_key is not None:
        pairs.append((tls.extra_certificate, tls.extra_key))
    try:
        for certificate, _ in pairs:
            with open(certificate, "rb") as f:
                _pem_blocks(f.read())  # "no certificate found" before OpenSSL's own words
        return tlsprofile.ServerTLS(tlsprofile.PROFILES[tls.profile], pairs)
    except Exception as e:  # noqa: BLE001 - any failure to load is a configuration error
        say.error("server.tls", f"cannot load certificate/key: {e or type(e).__name__}")
        return None


def _pem_blocks(pem: bytes) -> list[bytes]:
    marker = b"-----END CERTIFICATE-----"
    parts = [p + marker for p in pem.split(marker) if b"-----BEGIN CERTIFICATE-----" in p]
    if not parts:
        raise ValueError("no certificate found")
    return parts


def _own_targets(say: _Say, config: Config) -> None:
    """A route's target that is one of our own TCP listening addresses: mail for it would
    come back to us.  The next hop's own-address rule decides (it refuses such targets at
    delivery too); this says so up front."""
    own = NextHop(None, "")
    for description in config.server.listen:
        address = _tcp_address(description)
        if address is None:
            continue
        try:
            own.add_own(address[0] or "0.0.0.0", address[1])
        except ValueError:
            continue  # an interface given by name: the next hop learns it once bound
    for i, route in enumerate(config.routes):
        if route.use_mx and route.domain.startswith("*."):
            say.error(
                f"routes[{i}].use_mx",
                "not supported for a wildcard domain yet (each subdomain has its own MX "
                "records): give target_host, or one route per domain",
            )
        if route.use_mx and route.targets:
            say.warning(
                f"routes[{i}].target_host", "ignored: use_mx is true (the MX hosts are the targets)"
            )
        for target in route.targets:
            try:
                ours = own.is_self(target.host.strip("[]"), target.port)
            except ValueError:
                continue  # a name: the next hop skips our addresses when it resolves it
            if ours:
                say.error(
                    f"routes[{i}].target_host",
                    f"{target.host}:{target.port} is one of our own listening addresses "
                    "(the mail would come back to us)",
                )


def _tcp_address(description: str) -> tuple[str, int] | None:
    """(interface, port) of a ``tcp:``/``tcp6:`` description (interface "" for all)."""
    kind, _, rest = description.partition(":")
    if kind not in ("tcp", "tcp6"):
        return None
    args: list[str] = []
    options: dict[str, str] = {}
    for part in re.split(r"(?<!\\):", rest):  # "\:" is a colon inside a value (IPv6)
        name, equals, value = part.partition("=")
        if equals:
            options[name] = value.replace("\\:", ":")
        else:
            args.append(part)
    port = args[0] if args else options.get("port", "")
    if not port.isdigit():
        return None
    return options.get("interface", ""), int(port)
