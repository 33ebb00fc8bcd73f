"""DNSBL lookups against a DNS server of the test's own on 127.0.0.1: listed, not listed,
``match``, IPv6 nibbles, TTL cache, shared lookups in flight, timeouts and failures (fail open)."""

from __future__ import annotations

import ipaddress

from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.names import client, dns, error
from twisted.trial import unittest

from dnsserver import LoopbackDNS, silent_port
from mxbackup.checks.dnsbl import DNSBL, DNSBLCache, Listing, query_name
from mxbackup.config.checks import DNSBLZone

RECORDS = {
    "2.0.0.127.bl.test": [dns.Record_A("127.0.0.2", ttl=100), dns.Record_TXT(b"spam source")],
    "3.0.0.127.bl.test": [dns.Record_A("127.0.0.4", ttl=100)],
    "9.0.0.127.bl.test": [dns.Record_A("10.0.0.1", ttl=100)],  # outside 127/8: not a listing
    "3.0.0.127.other.test": [dns.Record_A("127.0.0.3", ttl=100)],
    "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test": [
        dns.Record_A("127.0.0.2", ttl=100)
    ],
}


def zone(name: str, *match: str) -> DNSBLZone:
    return DNSBLZone(name, tuple(ipaddress.ip_network(m) for m in match))


def test_query_names() -> None:
    assert query_name("192.0.2.1", "bl.test") == "1.2.0.192.bl.test"
    assert query_name("::ffff:192.0.2.1", "bl.test") == "1.2.0.192.bl.test"
    assert query_name("2001:db8::1", "bl.test") == (
        "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test"
    )
    assert query_name("nonsense", "bl.test") is None


class DNSBLTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dns = LoopbackDNS(RECORDS)
        self.dns.start(reactor)
        self.addCleanup(self.dns.stop)
        self.clock = Clock()
        self.counted: list[str] = []

    def dnsbl(self, *zones: DNSBLZone, resolver=None, timeout: float = 2.0) -> DNSBL:
        return DNSBL(
            zones,
            resolver or self.dns.resolver(reactor),
            self.clock.seconds,
            timeout,
            DNSBLCache(size=100),
            count=self.counted.append,
        )

    @defer.inlineCallbacks
    def test_listed_with_the_zones_reason(self):
        found = yield self.dnsbl(zone("bl.test")).listed("127.0.0.2")
        assert found == Listing("bl.test", "127.0.0.2", "spam source")
        assert self.counted == ["listed"]

    @defer.inlineCallbacks
    def test_not_listed_and_outside_127_is_no_listing(self):
        bl = self.dnsbl(zone("bl.test"))
        assert (yield bl.listed("127.0.0.1")) is None
        assert (yield bl.listed("127.0.0.9")) is None
        assert self.counted == ["clean", "clean"]

    @defer.inlineCallbacks
    def test_match_restricts_the_answers_that_list(self):
        bl = self.dnsbl(zone("bl.test", "127.0.0.2/32"))
        assert (yield bl.listed("127.0.0.3")) is None  # answered 127.0.0.4: not in match
        assert (yield bl.listed("127.0.0.2")) is not None

    @defer.inlineCallbacks
    def test_first_listing_zone_in_configuration_order(self):
        bl = self.dnsbl(zone("other.test"), zone("bl.test"))
        found = yield bl.listed("127.0.0.3")
        assert found.zone == "other.test"

    @defer.inlineCallbacks
    def test_ipv6_reversed_nibbles(self):
        found = yield self.dnsbl(zone("bl.test")).listed("2001:db8::1")
        assert found is not None and found.zone == "bl.test"

    @defer.inlineCallbacks
    def test_answers_are_cached_for_their_ttl_and_lookups_in_flight_shared(self):
        bl = self.dnsbl(zone("bl.test"))
        bl.start("127.0.0.3")
        first, second = bl.listed("127.0.0.3"), bl.listed("127.0.0.3")
        yield defer.gatherResults([first, second])
        asked = [q for q in self.dns.queries if q[1] == dns.A]
        assert len(asked) == 1
        assert bl.listed("127.0.0.3") is not None  # from the cache: no Deferred
        self.clock.advance(101)
        again = bl.listed("127.0.0.3")
        assert isinstance(again, defer.Deferred)
        yield again
        assert len([q for q in self.dns.queries if q[1] == dns.A]) == 2

    @defer.inlineCallbacks
    def test_timeout_lists_nobody(self):
        silent = silent_port(reactor)
        self.addCleanup(silent.stopListening)
        resolver = client.Resolver(servers=[("127.0.0.1", silent.getHost().port)])
        bl = self.dnsbl(zone("bl.test"), resolver=resolver, timeout=0.05)
        assert (yield bl.listed("127.0.0.2")) is None
        assert self.counted == ["error"]

    @defer.inlineCallbacks
    def test_dns_failure_lists_nobody(self):
        class Failing:
            def query(self, query, timeout=None):
                return defer.fail(error.DNSServerError("SERVFAIL"))

        bl = self.dnsbl(zone("bl.test"), resolver=Failing())
        assert (yield bl.listed("127.0.0.2")) is None
        assert self.counted == ["error"]

    def test_cache_is_bounded(self):
        cache = DNSBLCache(size=3)
        for i in range(10):
            cache.put(("z", str(i)), None, 100.0)
        assert len(cache.entries) == 3
