"""nexthop against a real DNS server of our own on 127.0.0.1 (twisted.names)."""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.names import authority, client, dns, server
from twisted.trial import unittest

from mxbackup import config as config_module
from mxbackup.outbound.nexthop import NextHop, NoRoute

ZONE = {
    "sender.test": [
        dns.Record_MX(20, b"mx2.sender.test"),
        dns.Record_MX(10, b"mx1.sender.test"),
    ],
    "mx1.sender.test": [dns.Record_A("127.0.0.21"), dns.Record_AAAA("::1")],
    "mx2.sender.test": [dns.Record_A("127.0.0.22")],
    "nomx.test": [dns.Record_A("127.0.0.30")],
    "nullmx.test": [dns.Record_MX(0, b"")],
    "us.test": [
        dns.Record_MX(10, b"primary.us.test"),
        dns.Record_MX(20, b"mx2.example.net"),
        dns.Record_MX(30, b"mx3.us.test"),
    ],
    "primary.us.test": [dns.Record_A("127.0.0.41")],
    "mx3.us.test": [dns.Record_A("127.0.0.43")],
    "target.test": [dns.Record_A("127.0.0.51"), dns.Record_A("127.0.0.52")],
}


class Zone(authority.FileAuthority):
    def loadFile(self, filename: str) -> None:
        self.soa = (
            "test",
            dns.Record_SOA(
                mname="ns.test",
                rname="root.test",
                serial=1,
                refresh=1,
                retry=1,
                expire=1,
                minimum=1,
            ),
        )
        self.records = {name.encode(): records for name, records in ZONE.items()}
        self.records[b"test"] = [self.soa[1]]


class NextHopTests(unittest.TestCase):
    def setUp(self) -> None:
        factory = server.DNSServerFactory(authorities=[Zone("test")])
        protocol = dns.DNSDatagramProtocol(factory)
        self.udp = reactor.listenUDP(0, protocol, interface="127.0.0.1")
        self.addCleanup(self.udp.stopListening)
        port = self.udp.getHost().port
        resolver = client.Resolver(servers=[("127.0.0.1", port)])
        self.nexthop = NextHop(resolver, "mx2.example.net")

    @defer.inlineCallbacks
    def test_mx_by_preference_with_every_address(self):
        found = yield self.nexthop.for_domain("sender.test")
        assert [(c.name, c.ip, c.port) for c in found] == [
            ("mx1.sender.test", "127.0.0.21", 25),
            ("mx1.sender.test", "::1", 25),
            ("mx2.sender.test", "127.0.0.22", 25),
        ]

    @defer.inlineCallbacks
    def test_no_mx_means_the_domain_itself(self):
        found = yield self.nexthop.for_domain("nomx.test")
        assert [(c.name, c.ip) for c in found] == [("nomx.test", "127.0.0.30")]

    @defer.inlineCallbacks
    def test_null_mx_is_permanent(self):
        with self.assertRaises(NoRoute):
            yield self.nexthop.for_domain("nullmx.test")

    @defer.inlineCallbacks
    def test_mx_at_or_below_our_own_preference_are_dropped(self):
        found = yield self.nexthop.for_domain("us.test")
        assert [c.name for c in found] == ["primary.us.test"]

    @defer.inlineCallbacks
    def test_route_targets_in_order_every_address_never_ourselves(self):
        data = {
            "server": {"hostname": "mx2.example.net", "listen": ["tcp:0"], "spool": "s"},
            "routes": [
                {
                    "domain": "example.com",
                    "target_host": ["target.test", "127.0.0.9:2525", "127.0.0.60"],
                    "port": 2526,
                }
            ],
        }
        route = config_module.parse(data, "t.yaml").routes[0]
        self.nexthop.add_own("127.0.0.9", 2525)
        found = yield self.nexthop.for_route(route)
        assert [(c.ip, c.port) for c in found] == [
            ("127.0.0.51", 2526),
            ("127.0.0.52", 2526),
            ("127.0.0.60", 2526),
        ]
        self.nexthop.add_own("0.0.0.0", 2526)
        found = yield self.nexthop.for_route(route)
        assert found == []  # loopback on our own port with a wildcard listener: ourselves
