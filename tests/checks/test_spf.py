"""SPF through pyspf fed by our resolver (a DNS server of the test's own on 127.0.0.1):
pass, fail, softfail, neutral, none, temperror, permerror (void lookups), include/a/mx/exists
with macros (several fetch rounds), the HELO identity for <>."""

from __future__ import annotations

from twisted.internet import defer, reactor
from twisted.names import dns, error
from twisted.trial import unittest

from dnsserver import LoopbackDNS
from mxbackup.checks.spf import SPF

RECORDS = {
    "pass.test": [dns.Record_TXT(b"v=spf1 ip4:127.0.0.5 -all")],
    "soft.test": [dns.Record_TXT(b"v=spf1 ~all")],
    "neutral.test": [dns.Record_TXT(b"v=spf1 ?all")],
    "incl.test": [
        dns.Record_TXT(b"v=spf1 include:pass.test a:host.incl.test mx exists:%{i}.ex.test -all")
    ],
    "host.incl.test": [dns.Record_A("127.0.0.7")],
    "mxhost.incl.test": [dns.Record_A("127.0.0.9")],
    "127.0.0.8.ex.test": [dns.Record_A("127.0.0.2")],
    "void.test": [dns.Record_TXT(b"v=spf1 a:n1.test a:n2.test a:n3.test -all")],
    "helo.test": [dns.Record_TXT(b"v=spf1 ip4:127.0.0.5 -all")],
    "split.test": [dns.Record_TXT(b"v=spf1 ip4:127.0.0.5", b" -all")],
}


class SPFTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dns = LoopbackDNS(RECORDS)
        self.dns.zone.add("incl.test", dns.Record_MX(10, b"mxhost.incl.test"))
        self.dns.start(reactor)
        self.addCleanup(self.dns.stop)
        self.counted: list[str] = []
        self.spf = SPF(self.dns.resolver(reactor), 2.0, "mx2.example.net", self.counted.append)

    @defer.inlineCallbacks
    def check(self, ip: str, sender: str, helo: str | None = "c.test") -> object:
        result = yield self.spf.check(ip, sender, helo)
        return result

    @defer.inlineCallbacks
    def test_pass_and_fail(self):
        ok = yield self.check("127.0.0.5", "a@pass.test")
        assert (ok.result, ok.identity, ok.domain) == ("pass", "mailfrom", "pass.test")
        bad = yield self.check("127.0.0.6", "a@pass.test")
        assert bad.result == "fail" and bad.mechanism == "-all"
        assert self.counted == ["pass", "fail"]

    @defer.inlineCallbacks
    def test_a_record_in_several_strings(self):
        assert (yield self.check("127.0.0.5", "a@split.test")).result == "pass"

    @defer.inlineCallbacks
    def test_softfail_neutral_none(self):
        assert (yield self.check("127.0.0.6", "a@soft.test")).result == "softfail"
        assert (yield self.check("127.0.0.6", "a@neutral.test")).result == "neutral"
        assert (yield self.check("127.0.0.6", "a@nothing.test")).result == "none"

    @defer.inlineCallbacks
    def test_include_a_mx_and_exists_with_a_macro(self):
        assert (yield self.check("127.0.0.5", "a@incl.test")).result == "pass"  # include
        assert (yield self.check("127.0.0.7", "a@incl.test")).result == "pass"  # a:
        assert (yield self.check("127.0.0.9", "a@incl.test")).result == "pass"  # mx
        assert (yield self.check("127.0.0.8", "a@incl.test")).result == "pass"  # exists:%{i}
        assert (yield self.check("127.0.0.10", "a@incl.test")).result == "fail"

    @defer.inlineCallbacks
    def test_void_lookup_limit_is_a_permerror(self):
        assert (yield self.check("127.0.0.6", "a@void.test")).result == "permerror"

    @defer.inlineCallbacks
    def test_null_sender_checks_the_helo_name(self):
        result = yield self.check("127.0.0.5", "", "helo.test")
        assert (result.result, result.identity, result.domain) == ("pass", "helo", "helo.test")
        literal = yield self.check("127.0.0.5", "", "[127.0.0.5]")
        assert literal.result == "none"

    @defer.inlineCallbacks
    def test_dns_trouble_is_temperror(self):
        class Failing:
            def query(self, query, timeout=None):
                return defer.fail(error.DNSServerError("SERVFAIL"))

        spf = SPF(Failing(), 1.0, "mx2.example.net")
        assert (yield spf.check("127.0.0.5", "a@pass.test", "c.test")).result == "temperror"
