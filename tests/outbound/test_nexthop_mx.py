"""``use_mx`` routes: the domain's MX hosts more preferred than we are, against a DNS server
of the test's own on 127.0.0.1 (``dnsserver``)."""

from __future__ import annotations

from twisted.internet import defer
from twisted.names import client, dns
from twisted.trial import unittest

from dnsserver import DNSServer, Zone
from mxbackup import config as config_module
from mxbackup.outbound.nexthop import NextHop, NotNow

RECORDS = {
    "example.com": [
        dns.Record_MX(10, b"primary.example.com", ttl=60),
        dns.Record_MX(20, b"mx2.example.net", ttl=60),  # us, by name
        dns.Record_MX(30, b"mx3.example.com", ttl=60),
    ],
    "primary.example.com": [dns.Record_A("192.0.2.41", ttl=60)],
    "primary2.example.com": [dns.Record_A("192.0.2.42", ttl=60)],
    "mx3.example.com": [dns.Record_A("192.0.2.43", ttl=60)],
    # we are the best MX (by helo_name)
    "alone.test": [
        dns.Record_MX(10, b"out.mx2.example.net", ttl=60),
        dns.Record_MX(20, b"mx3.example.com", ttl=60),
    ],
    # us by address: our wildcard listener's port, a local address
    "byaddr.test": [
        dns.Record_MX(5, b"primary.example.com", ttl=60),
        dns.Record_MX(10, b"me.byaddr.test", ttl=60),
        dns.Record_MX(20, b"mx3.example.com", ttl=60),
    ],
    "me.byaddr.test": [dns.Record_A("192.0.2.77", ttl=60)],
    "nomx.test": [dns.Record_A("192.0.2.30", ttl=60)],
    "nullmx.test": [dns.Record_MX(0, b"", ttl=60)],
    "self.test": [dns.Record_A("192.0.2.77", ttl=60)],  # no MX: the domain itself, us
}


def route(domain: str, port: int = 25):
    data = {
        "server": {"hostname": "mx2.example.net", "listen": ["tcp:0"], "spool": "s"},
        "delivery": {"helo_name": "out.mx2.example.net"},
        "routes": [{"domain": domain, "use_mx": True, "port": port}],
    }
    return config_module.parse(data, "t.yaml").routes[0]


class UseMXTests(unittest.TestCase):
    def setUp(self) -> None:
        self.zone = Zone("test", {})
        self.zone_com = Zone("example.com", {})
        for zone in (self.zone, self.zone_com):
            zone.set_all({k: v for k, v in RECORDS.items() if k.endswith(zone.origin)})
        self.dns = DNSServer([self.zone, self.zone_com])
        self.addCleanup(self.dns.stop)
        self.clock_resolver = client.Resolver(servers=[("127.0.0.1", self.dns.port)])
        self.now = 1000.0
        self.nexthop = NextHop(
            self.clock_resolver,
            "mx2.example.net",
            local=lambda ip: ip == "192.0.2.77",
            clock=lambda: self.now,
        )
        self.nexthop.set_names("mx2.example.net", "out.mx2.example.net")

    @defer.inlineCallbacks
    def test_targets_are_the_mx_hosts_more_preferred_than_we_are(self):
        found = yield self.nexthop.for_route(route("example.com", 2525))
        assert [(c.name, c.ip, c.port) for c in found] == [
            ("primary.example.com", "192.0.2.41", 2525)
        ]

    @defer.inlineCallbacks
    def test_we_are_the_best_mx_left_loops_back_to_myself(self):
        with self.assertRaises(NotNow) as caught:
            yield self.nexthop.for_route(route("alone.test"))
        assert str(caught.exception) == "4.4.6 mail for alone.test loops back to myself"

    @defer.inlineCallbacks
    def test_an_mx_host_at_one_of_our_addresses_is_us(self):
        self.nexthop.add_own("0.0.0.0", 25)  # we listen on every address, port 25
        found = yield self.nexthop.for_route(route("byaddr.test"))
        assert [c.name for c in found] == ["primary.example.com"]
        with self.assertRaises(NotNow) as caught:
            yield self.nexthop.for_route(route("self.test"))  # no MX, the domain is us
        assert "loops back to myself" in str(caught.exception)

    @defer.inlineCallbacks
    def test_our_address_on_another_port_is_not_us(self):
        self.nexthop.add_own("0.0.0.0", 2525)
        found = yield self.nexthop.for_route(route("byaddr.test"))
        assert [c.name for c in found] == [
            "primary.example.com",
            "me.byaddr.test",
            "mx3.example.com",
        ]

    @defer.inlineCallbacks
    def test_no_mx_means_the_domain_itself(self):
        found = yield self.nexthop.for_route(route("nomx.test"))
        assert [(c.name, c.ip) for c in found] == [("nomx.test", "192.0.2.30")]

    @defer.inlineCallbacks
    def test_dns_failures_are_temporary_with_the_reason(self):
        for domain, words in (
            ("nxdomain.test", "no such domain"),
            ("nullmx.test", "null MX"),
        ):
            with self.assertRaises(NotNow) as caught:
                yield self.nexthop.for_route(route(domain))
            assert str(caught.exception).startswith("4.4.3 DNS"), caught.exception
            assert words in str(caught.exception)

    @defer.inlineCallbacks
    def test_a_dns_server_that_does_not_answer_is_temporary(self):
        dead = client.Resolver(servers=[("127.0.0.1", 9)], timeout=(0.2,))
        nexthop = NextHop(dead, "mx2.example.net")
        with self.assertRaises(NotNow) as caught:
            yield nexthop.for_route(route("example.com"))
        assert str(caught.exception).startswith("4.4.3 DNS lookup of the MX hosts of example.com")

    @defer.inlineCallbacks
    def test_answers_are_cached_for_their_ttl_then_read_again(self):
        def mx_queries() -> int:
            return self.dns.queries.count(("example.com", dns.MX))

        yield self.nexthop.for_route(route("example.com"))
        asked = mx_queries()
        self.zone_com.set("example.com", [dns.Record_MX(10, b"primary2.example.com", ttl=60)])
        found = yield self.nexthop.for_route(route("example.com"))
        assert mx_queries() == asked  # from the cache: the TTL has not run out
        assert [c.name for c in found] == ["primary.example.com"]
        self.now += 59
        found = yield self.nexthop.for_route(route("example.com"))
        assert mx_queries() == asked  # still
        self.now += 1  # the TTL (60 s) has run out
        found = yield self.nexthop.for_route(route("example.com"))
        assert [c.name for c in found] == ["primary2.example.com"]
        assert mx_queries() == asked + 1
