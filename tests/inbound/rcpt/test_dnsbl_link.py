"""The DNSBL link in a session: lookups start at connect, a listed client gets 554 5.7.1 naming
the zone at RCPT, postmaster@ our host name stays reachable, exempt ranges and authenticated
clients are not asked about; a DNS server of the test's own on 127.0.0.1."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from twisted.internet import defer, reactor
from twisted.names import dns
from twisted.trial import unittest

from dnsserver import LoopbackDNS
from helpers import Harness, base_config
from mxbackup.checks.env import CheckEnv

RECORDS = {"2.0.0.127.bl.test": [dns.Record_A("127.0.0.2"), dns.Record_TXT(b"go away")]}


def checked_config(tmp: Path, **checks) -> dict:
    data = base_config(tmp)
    data["routes"].append({"domain": "mx2.example.net", "target_host": "127.0.0.1", "port": 9})
    data["ip_ranges"] = [
        {"name": "Trusted", "addresses": ["127.0.0.3/32"]},
        {"name": "Internet", "addresses": ["0.0.0.0/0", "::/0"]},
    ]
    data["checks"] = {"dnsbl": [{"zone": "bl.test"}], **checks}
    return data


class DNSBLLinkTests(unittest.TestCase):
    def setUp(self) -> None:
        self.dns = LoopbackDNS(RECORDS)
        self.dns.start(reactor)
        self.addCleanup(self.dns.stop)

    def harness(self, **checks) -> Harness:
        tmp = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, tmp, True)
        h = Harness(tmp, checked_config(tmp, **checks))
        h.factory.checks_env = CheckEnv(
            resolver=self.dns.resolver(reactor), clock=h.clock, stats=h.factory.stats
        )
        h.factory.reconfigure(h.config)
        return h

    @defer.inlineCallbacks
    def settled(self, h: Harness, ip: str):
        """Wait for the lookups started at connect (the session's RCPT answers from them)."""
        dnsbl = h.factory.policy.checks.dnsbl
        found = dnsbl.listed(ip)
        if isinstance(found, defer.Deferred):
            yield found

    @defer.inlineCallbacks
    def test_listed_client_refused_at_rcpt_naming_the_zone(self):
        h = self.harness()
        conn = h.connect("127.0.0.2")
        assert ("bl.test", "127.0.0.2") in h.factory.checks_env.dnsbl_cache.pending  # at connect
        yield self.settled(h, "127.0.0.2")
        lines = conn.send(
            b"EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\nRCPT TO:<u@example.com>\r\n"
        )
        assert lines[-1].startswith("554 5.7.1 ")
        assert "bl.test" in lines[-1] and "go away" in lines[-1]
        assert h.factory.stats.refusals["dnsbl"] == 1
        assert conn.send(b"RCPT TO:<postmaster@mx2.example.net>\r\n")[-1].startswith("250")
        assert conn.send(b"RCPT TO:<POSTMASTER@MX2.example.net>\r\n")[-1].startswith("250")

    @defer.inlineCallbacks
    def test_unlisted_and_exempt_clients_pass(self):
        h = self.harness(exempt_ranges=["Trusted"])
        conn = h.connect("127.0.0.1")
        yield self.settled(h, "127.0.0.1")
        txn = b"EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\nRCPT TO:<u@example.com>\r\n"
        assert conn.send(txn)[-1].startswith("250")
        conn = h.connect("127.0.0.3")  # exempt: not even looked up
        assert not h.factory.checks_env.dnsbl_cache.pending
        assert conn.send(txn)[-1].startswith("250")

    @defer.inlineCallbacks
    def test_rcpt_waits_for_a_lookup_still_in_flight(self):
        h = self.harness()
        conn = h.connect("127.0.0.2")
        h.factory.checks_env.dnsbl_cache.entries.clear()
        conn.send(b"EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\nRCPT TO:<u@example.com>\r\n")
        yield self.settled(h, "127.0.0.2")
        yield defer.succeed(None)
        assert conn.read()[-1].startswith("554 5.7.1")
