"""Where to connect: a route's targets in order (every address of each), or the MX hosts of a
domain (for bounces and authenticated relay), never one of our own listening addresses.

Uses an injected ``twisted.names`` resolver, so tests can run their own DNS on 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import random
import socket
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.names import dns
from twisted.names.error import DNSNameError, DomainError
from twisted.python.failure import Failure

from mxbackup.config import Route
from mxbackup.wire.contract import Candidate

log = Logger(namespace="mxbackup.nexthop")
MAX_TTL = 3600  # seconds a use_mx answer is kept at most, whatever its records' TTL


class NoRoute(Exception):
    """The domain can never be delivered to (null MX, or it does not exist)."""


class NotNow(Exception):
    """No next hop for now, for a reason that may pass (DNS failure, the MX records point
    back at us): the mail waits (``str(e)`` is the reason, with its enhanced code)."""


class NextHop:
    def __init__(
        self,
        resolver: Any,
        hostname: str,
        local: Callable[[str], bool] | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self.resolver = resolver
        self.hostname = hostname.lower()
        self.names = {self.hostname}  # our own names: an MX host by one of them is us
        self._own: set[tuple[str, int]] = set()
        self._own_any_ports: set[int] = set()
        self._local = local or is_local_address
        self._clock = clock or time.time
        # use_mx answers by (domain, port): (until when, candidates or the NotNow), kept for
        # the shortest TTL of the records they came from (Twisted's resolver chain keeps none)
        self._mx_cache: dict[tuple[str, int], tuple[float, Any]] = {}

    def set_names(self, *names: str) -> None:
        """Our names (server.hostname, delivery.helo_name): MX hosts by these names are us."""
        self.names = {n.lower().rstrip(".") for n in names if n}

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
        if port not in self._own_any_ports:
            return False
        return addr.is_loopback or addr.is_unspecified or self._local(str(addr))

    @defer.inlineCallbacks
    def for_route(self, route: Route) -> Any:
        if route.use_mx:
            return (yield self.for_mx_route(route))
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
        own = [pref for pref, name in mxs if name in self.names]
        if own:
            mxs = [(p, n) for p, n in mxs if p < min(own)]
        random.shuffle(mxs)
        mxs.sort(key=lambda m: m[0])
        candidates: list[Candidate] = []
        for _, name in mxs:
            candidates += yield self._addresses(name, 25)
        return self._without_self(candidates)

    def for_mx_route(self, route: Route) -> defer.Deferred[list[Candidate]]:
        """``_for_mx_route``, its answer kept as long as the records' TTL says."""
        key = (route.domain, route.port)
        now = self._clock()
        cached = self._mx_cache.get(key)
        if cached is not None and now < cached[0]:
            answer = cached[1]
            return defer.fail(answer) if isinstance(answer, NotNow) else defer.succeed(answer)
        ttls: list[int] = []

        def keep(answer: Any) -> Any:
            if isinstance(answer, Failure):
                if not answer.check(NotNow) or not ttls:  # DNS failures: asked again
                    return answer
                value = answer.value
            else:
                value = answer
            ttl = min(max(min(ttls, default=0), 0), MAX_TTL)
            if ttl:
                self._mx_cache[key] = (now + ttl, value)
            return answer

        return self._for_mx_route(route, ttls).addBoth(keep)

    @defer.inlineCallbacks
    def _for_mx_route(self, route: Route, ttls: list[int]) -> Any:
        """``use_mx``: the route's domain's MX hosts more preferred than we are, at the route's
        port.  An MX host is us when its name is one of ours or one of its addresses is one
        of ours; it and every MX at or below its preference are skipped (Postfix's rule for
        relay domains).  Nothing left: ``NotNow`` ("loops back to myself"), never ourselves.
        Every DNS failure is ``NotNow`` too: mail we took as a backup MX waits.  Answers
        come through the resolver's cache, so they are re-read as their TTL says."""
        domain = route.domain
        try:
            answers, _, _ = yield self.resolver.lookupMailExchange(domain)
        except Exception as e:  # noqa: BLE001 - NXDOMAIN, SERVFAIL, timeout: all temporary
            raise NotNow(f"4.4.3 DNS lookup of the MX hosts of {domain} failed: {_dns(e)}") from e
        mxs = [
            (a.payload.preference, str(a.payload.name).lower().rstrip("."))
            for a in answers
            if a.type == dns.MX
        ]
        ttls += [a.ttl for a in answers if a.type == dns.MX]
        if any(name == "" for _, name in mxs):
            raise NotNow(f"4.4.3 DNS: {domain} has a null MX (it says it accepts no mail)")
        hosts: list[tuple[int, bool, list[Candidate]]] = []
        for pref, name in mxs or [(0, domain)]:
            if name in self.names:  # us by name: its addresses do not matter
                hosts.append((pref, True, []))
                continue
            found = yield self._addresses(name, route.port, ttls)
            ours = any(self.is_self(c.ip, c.port) for c in found)
            hosts.append((pref, ours, found))
        best = min((pref for pref, ours, _ in hosts if ours), default=None)
        kept = [(p, found) for p, ours, found in hosts if not ours and (best is None or p < best)]
        if best is not None and not kept:
            raise NotNow(f"4.4.6 mail for {domain} loops back to myself")
        random.shuffle(kept)
        kept.sort(key=lambda h: h[0])
        return self._without_self([c for _, found in kept for c in found])

    @defer.inlineCallbacks
    def _addresses(self, host: str, port: int, ttls: list[int] | None = None) -> Any:
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
                    if ttls is not None:
                        ttls.append(a.ttl)
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


def _dns(e: BaseException) -> str:
    if isinstance(e, DNSNameError):
        return "no such domain (NXDOMAIN)"
    return f"{type(e).__name__}: {e}".rstrip(": ") if str(e) else type(e).__name__


def is_local_address(ip: str) -> bool:
    """One of this host's interface addresses: a socket can be bound to it (the kernel says
    EADDRNOTAVAIL for any other).  A syscall, no traffic."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.bind((ip, 0))
    except OSError:
        return False
    return True


def _v6(packed: bytes) -> str:
    return str(ipaddress.IPv6Address(packed))
