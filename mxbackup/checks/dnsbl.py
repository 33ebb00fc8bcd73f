"""DNS blocklists (RFC 5782): is the client's address listed in a zone?

Pure: the resolver and clock are injected.  The lookups start when the client connects
(``start``), so the answer is usually there by RCPT (``listed``).  Answers are remembered for
the record's TTL in a bounded cache shared by every connection (and kept across reloads); a
lookup in flight is shared too, so a hundred connections from one address cost one query per
zone.  A timeout or a DNS failure lists nobody (fail open, invariant 6) and is logged.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from twisted.internet.defer import Deferred, gatherResults, succeed
from twisted.logger import Logger

from mxbackup.checks.dnslookup import Answer, DNSTrouble, lookup
from mxbackup.config.checks import DNSBLZone
from mxbackup.names import client_address

log = Logger(namespace="mxbackup.checks")

CACHE_SIZE = 50_000  # (zone, address) answers kept; the least recently used go first
MAX_TTL = 86400
TROUBLE_TTL = 60  # a failed lookup is asked again after this long, not at every RCPT


@dataclass(frozen=True, slots=True)
class Listing:
    zone: str
    answer: str  # the A record that listed the client
    reason: str = ""  # the zone's TXT record, when it had one


def query_name(client_ip: str, zone: str) -> str | None:
    """``4.3.2.1.zone`` for 1.2.3.4, reversed nibbles for IPv6; None for a non-address."""
    ip = client_address(client_ip)
    if ip is None:
        return None
    if isinstance(ip, ipaddress.IPv4Address):
        labels = reversed(str(ip).split("."))
    else:
        labels = reversed(ip.exploded.replace(":", ""))
    return ".".join(labels) + "." + zone.rstrip(".")


def is_listing(address: str, zone: DNSBLZone) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if zone.match:
        return any(ip.version == net.version and ip in net for net in zone.match)
    return isinstance(ip, ipaddress.IPv4Address) and ip in _LOOPBACK


_LOOPBACK = ipaddress.ip_network("127.0.0.0/8")


class DNSBLCache:
    """(zone, address) -> (expiry, Listing | None), bounded; and the lookups in flight."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self.size = size
        self.entries: OrderedDict[tuple[str, str], tuple[float, Listing | None]] = OrderedDict()
        self.pending: dict[tuple[str, str], list[Deferred[Listing | None]]] = {}

    def get(self, key: tuple[str, str], now: float) -> tuple[bool, Listing | None]:
        entry = self.entries.get(key)
        if entry is None or entry[0] <= now:
            return False, None
        self.entries.move_to_end(key)
        return True, entry[1]

    def put(self, key: tuple[str, str], value: Listing | None, until: float) -> None:
        self.entries[key] = (until, value)
        self.entries.move_to_end(key)
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)


class DNSBL:
    """The configured zones, in order; ``count(result)`` is told each lookup's outcome."""

    def __init__(
        self,
        zones: Sequence[DNSBLZone],
        resolver: Any,
        now: Callable[[], float],
        timeout: float,
        cache: DNSBLCache,
        count: Callable[[str], None] = lambda result: None,
    ) -> None:
        self.zones = tuple(zones)
        self.resolver = resolver
        self.now = now
        self.timeout = timeout
        self.cache = cache
        self.count = count

    def start(self, client_ip: str) -> None:
        """Begin the lookups (at connect); their answers land in the cache."""
        for zone in self.zones:
            self._result(zone, client_ip)

    def listed(self, client_ip: str) -> Listing | None | Deferred[Listing | None]:
        """The first zone (in configuration order) that lists the client, or None."""
        results = [self._result(zone, client_ip) for zone in self.zones]
        if not any(isinstance(r, Deferred) for r in results):
            return next((r for r in results if r is not None), None)
        waiting = [r if isinstance(r, Deferred) else succeed(r) for r in results]
        return gatherResults(waiting).addCallback(
            lambda found: next((r for r in found if r is not None), None)
        )

    def _result(self, zone: DNSBLZone, client_ip: str) -> Listing | None | Deferred[Listing | None]:
        key = (zone.zone.lower(), client_ip)
        known, value = self.cache.get(key, self.now())
        if known:
            return value
        waiters = self.cache.pending.get(key)
        if waiters is None:
            name = query_name(client_ip, zone.zone)
            if name is None:
                return None
            waiters = self.cache.pending[key] = []
            d = lookup(self.resolver, name, "A", self.timeout)
            d.addCallback(self._listed_by, zone, name)
            d.addErrback(self._trouble, zone, client_ip)
            d.addCallback(self._answered, key)
            known, value = self.cache.get(key, self.now())
            if known:  # answered at once (a cache in the resolver, a failure)
                return value
        waiter: Deferred[Listing | None] = Deferred()
        waiters.append(waiter)
        return waiter

    def _listed_by(self, answer: Answer, zone: DNSBLZone, name: str) -> Any:
        hits = [a for a in answer.values("A") if is_listing(a, zone)]
        if not hits:
            self.count("clean")
            return None, min(answer.ttl, MAX_TTL)
        self.count("listed")
        listing = Listing(zone.zone, hits[0])
        d = lookup(self.resolver, name, "TXT", self.timeout)  # the reason, if cheap
        d.addCallbacks(lambda txt: Listing(zone.zone, hits[0], _reason(txt)), lambda _: listing)
        return d.addCallback(lambda found: (found, min(answer.ttl, MAX_TTL)))

    def _trouble(self, failure: Any, zone: DNSBLZone, client_ip: str) -> tuple[None, int]:
        failure.trap(DNSTrouble)
        self.count("error")
        log.info(
            "dnsbl lookup failed zone={zone} client={ip}: {error} (not listed)",
            zone=zone.zone,
            ip=client_ip,
            error=failure.getErrorMessage(),
        )
        return None, TROUBLE_TTL

    def _answered(self, result: tuple[Listing | None, int], key: tuple[str, str]) -> None:
        value, ttl = result
        self.cache.put(key, value, self.now() + max(ttl, 1))
        for waiter in self.cache.pending.pop(key, []):
            waiter.callback(value)


def _reason(answer: Answer) -> str:
    for parts in answer.values("TXT"):
        text = b"".join(parts).decode("utf-8", "replace").strip()
        if text:
            return text[:200]
    return ""
