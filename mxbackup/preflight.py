"""Checks of a configuration that need more than its YAML: endpoints Twisted must parse, the
TLS certificate and key, addresses that would make us deliver to ourselves, and keys that
are legal but probably wrong.

``mxbackup check-config`` and the server run the same checks (``preflight``), so what the
first calls OK the second does not refuse.  Errors are one line each, ``file: key.path:
reason``, like the configuration's own; warnings the same, and they do not stop anything.
Nothing here listens or connects: endpoints are parsed, not bound.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass, field
from typing import Any

from OpenSSL.crypto import FILETYPE_PEM
from twisted.internet import endpoints, ssl

from mxbackup.config import Config

_ANY = ("", "0.0.0.0", "::")


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
    return report


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


def _parse_endpoint(say: _Say, key: str, description: str) -> None:
    if description.startswith("systemd:") and "LISTEN_FDS" not in os.environ:
        return  # its sockets come from systemd at start: nothing to parse against here
    try:
        endpoints.serverFromString(_NoReactor(), description)
    except (ValueError, KeyError, TypeError) as e:
        say.error(key, f"bad endpoint {description!r}: {e}")


def _tls(say: _Say, config: Config) -> Any:
    tls = config.server.tls
    if tls is None:
        return None
    try:
        with open(tls.certificate, "rb") as f:
            cert_pem = f.read()
        with open(tls.key, "rb") as f:
            key_pem = f.read()
        certs = [ssl.Certificate.loadPEM(block) for block in _pem_blocks(cert_pem)]
        key = ssl.KeyPair.load(key_pem, FILETYPE_PEM)
        return ssl.CertificateOptions(
            privateKey=key.original,
            certificate=certs[0].original,
            extraCertChain=[c.original for c in certs[1:]],
        )
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
    come back to us (the server also refuses it at delivery; this says so up front)."""
    own = [_tcp_address(d) for d in config.server.listen]
    own_addresses = [a for a in own if a is not None]
    for i, route in enumerate(config.routes):
        for target in route.targets:
            if _is_own(target.host, target.port, own_addresses):
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
    parts = rest.split(":")
    if not parts[0].isdigit():
        return None
    interface = next((p.split("=", 1)[1] for p in parts[1:] if p.startswith("interface=")), "")
    return interface.replace("\\:", ":"), int(parts[0])


def _is_own(host: str, port: int, own: list[tuple[str, int]]) -> bool:
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False  # a name: only the next hop knows (it skips our addresses when it resolves)
    for interface, own_port in own:
        if port != own_port:
            continue
        if interface in _ANY and (address.is_loopback or address.is_unspecified):
            return True
        if interface not in _ANY and ipaddress.ip_address(interface) == address:
            return True
    return False
