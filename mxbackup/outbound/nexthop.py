"""Where to connect: a route's targets in order (every address of each), or the MX hosts of a
domain (for bounces and authenticated relay), never one of our own listening addresses.

Uses an injected ``twisted.names`` resolver, so tests can run their own DNS on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import random
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.names import dns
from twisted.names.error import DNSNameError, DomainError

from mxbackup.config import Route
from mxbackup.wire.contract import Candidate

log = Logger(namespace="mxbackup.nexthop")


class NoRoute(Exception):
    """The domain can never be delivered to (null MX, or it does not exist)."""


class NextHop:
    def __init__(self, resolver: Any, hostname: str) -> None:
        self.resolver = resolver
        self.hostname = hostname.lower()
        self._own: set[tuple[str, int]] = set()
        self._own_any_ports: set[int] = set()

    def add_own(self, ip: str, port: int) -> None:
        """Record one of our listening addresses (unspecified = every local address)."""
        addr = ipaddress.ip_address(ip)
        if addr.is_unspecified:
            self._own_any_ports.add(port)
        else:
            self._own.add((str(addr), port))

    def is_self(self, ip: str, port: int) -> bool:
        addr = ipaddress.ip_address(ip)
        if (str(addr), port) in self._own:
            return True
        return port in self._own_any_ports and (addr.is_loopback or addr.is_unspecified)

    @defer.inlineCallbacks
    def for_route(self, route: Route) -> Any:
        candidates: list[Candidate] = []
        for target in route.targets:
            candidates += yield self._addresses(target.host, target.port)
        return self._without_self(candidates)

    @defer.inlineCallbacks
    def for_domain(self, domain: str) -> Any:
        """MX lookup (RFC 5321 5.1): by preference, equal ones shuffled, none at or below our
        own preference; no MX means the domain's own address; a null MX means never."""
        try:
            answers, _, _ = yield self.resolver.lookupMailExchange(domain)
        except DNSNameError:
            raise NoRoute(f"domain {domain} does not exist") from None
        except DomainError:
            answers = []
        mxs = [
            (a.payload.preference, str(a.payload.name).lower().rstrip("."))
            for a in answers
            if a.type == dns.MX
        ]
        if any(name == "" for _, name in mxs):
            raise NoRoute(f"domain {domain} accepts no mail (null MX)")
        if not mxs:
            mxs = [(0, domain)]
        own = [pref for pref, name in mxs if name == self.hostname]
        if own:
            mxs = [(p, n) for p, n in mxs if p < min(own)]
        random.shuffle(mxs)
        mxs.sort(key=lambda m: m[0])
        candidates: list[Candidate] = []
        for _, name in mxs:
            candidates += yield self._addresses(name, 25)
        return self._without_self(candidates)

    @defer.inlineCallbacks
    def _addresses(self, host: str, port: int) -> Any:
        try:
            ipaddress.ip_address(host)
            return [Candidate(host, host, port)]
        except ValueError:
            pass
        found: list[Candidate] = []
        for lookup, rtype in (
            (self.resolver.lookupAddress, dns.A),
            (self.resolver.lookupIPV6Address, dns.AAAA),
        ):
            try:
                answers, _, _ = yield lookup(host)
            except Exception:  # noqa: BLE001 - a name without this record type
                continue
            for a in answers:
                if a.type == rtype:
                    found.append(
                        Candidate(
                            host,
                            a.payload.dottedQuad() if rtype == dns.A else _v6(a.payload.address),
                            port,
                        )
                    )
        if not found:
            log.info("no address for {host}", host=host)
        return found

    def _without_self(self, candidates: list[Candidate]) -> list[Candidate]:
        kept = [c for c in candidates if not self.is_self(c.ip, c.port)]
        if len(kept) < len(candidates):
            log.warn("skipped our own address among the targets (mail loop avoided)")
        return kept


def _v6(packed: bytes) -> str:
    return str(ipaddress.IPv6Address(packed))
