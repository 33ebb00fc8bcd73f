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
from dataclasses import dataclass, field
from typing import Any

from OpenSSL.crypto import FILETYPE_PEM
from twisted.internet import endpoints, ssl

from mxbackup.config import Config
from mxbackup.outbound.nexthop import NextHop

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
