"""The checks in a session: SPF at MAIL (tag / reject, exempt and authenticated clients),
with a DNS server of the test's own on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import dkim
from twisted.internet import defer, reactor, task
from twisted.names import dns
from twisted.trial import unittest

from dnsserver import LoopbackDNS, rsa_key, txt_lookup
from helpers import Harness, base_config
from mxbackup.checks.env import CheckEnv

RECORDS = {"pass.test": [dns.Record_TXT(b"v=spf1 ip4:127.0.0.5 -all")]}


def checked_config(tmp: Path, **checks: Any) -> dict:
    data = base_config(tmp)
    data["ip_ranges"] = [
        {"name": "Trusted", "addresses": ["127.0.0.3/32"]},
        {"name": "Internet", "addresses": ["0.0.0.0/0", "::/0"]},
    ]
    data["checks"] = checks
    return data


class CheckedSession(unittest.TestCase):
    def setUp(self) -> None:
        self.dns = LoopbackDNS(RECORDS)
        self.dns.start(reactor)
        self.addCleanup(self.dns.stop)

    def harness(self, **checks: Any) -> Harness:
        tmp = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, tmp, True)
        h = Harness(tmp, checked_config(tmp, **checks))
        h.factory.checks_env = CheckEnv(
            resolver=self.dns.resolver(reactor), clock=h.clock, stats=h.factory.stats
        )
        h.factory.reconfigure(h.config)
        return h

    @defer.inlineCallbacks
    def mail(self, conn: Any, sender: str) -> Any:
        """MAIL (SPF answers asynchronously): the reply lines once it came."""
        conn.send(b"EHLO c.test\r\n")
        conn.proto.dataReceived(f"MAIL FROM:<{sender}>\r\n".encode())
        for _ in range(50):
            lines = conn.read()
            if lines:
                return lines
            yield deferLater(0.01)
        raise AssertionError("no reply to MAIL")


def deferLater(seconds: float) -> defer.Deferred:
    return task.deferLater(reactor, seconds, lambda: None)


class SPFAtMail(CheckedSession):
    @defer.inlineCallbacks
    def test_reject_refuses_a_fail_at_mail(self):
        h = self.harness(spf="reject")
        lines = yield self.mail(h.connect("127.0.0.6"), "a@pass.test")
        assert lines[-1].startswith("550 5.7.23 ")
        assert h.factory.stats.refusals["spf"] == 1
        lines = yield self.mail(h.connect("127.0.0.5"), "a@pass.test")
        assert lines[-1].startswith("250")

    @defer.inlineCallbacks
    def test_tag_keeps_the_result_for_the_message(self):
        h = self.harness(spf="tag")
        conn = h.connect("127.0.0.6")
        lines = yield self.mail(conn, "a@pass.test")
        assert lines[-1].startswith("250")
        assert conn.proto.transaction.results["spf"].result == "fail"

    @defer.inlineCallbacks
    def test_exempt_ranges_skip_spf(self):
        h = self.harness(spf="reject", exempt_ranges=["Trusted"])
        conn = h.connect("127.0.0.3")
        conn.send(b"EHLO c.test\r\n")
        assert conn.send(b"MAIL FROM:<a@pass.test>\r\n")[-1].startswith("250")
        assert "spf" not in conn.proto.transaction.results
        yield defer.succeed(None)


SIGNER_KEY, SIGNER_TXT = rsa_key()
ARC_KEY, ARC_TXT = rsa_key()


def signed_message(body: bytes = b"Hello.\r\n") -> bytes:
    message = (
        b"From: a@pass.test\r\nTo: u@example.com\r\nSubject: signed\r\n"
        b"Authentication-Results: mx2.example.net; dkim=pass (forged)\r\n\r\n" + body
    )
    signature = dkim.sign(
        message, b"sel", b"pass.test", SIGNER_KEY, include_headers=[b"from", b"to", b"subject"]
    )
    return signature + message


class EndOfData(CheckedSession):
    def setUp(self) -> None:
        super().setUp()
        self.dns.zone.add("sel._domainkey.pass.test", dns.Record_TXT(*SIGNER_TXT))
        self.dns.zone.add("arc._domainkey.mx2.example.net", dns.Record_TXT(*ARC_TXT))

    def sealing(self, **more: Any) -> Harness:
        key = Path(tempfile.mkdtemp()) / "arc.key"
        self.addCleanup(shutil.rmtree, key.parent, True)
        key.write_bytes(ARC_KEY)
        arc = {"domain": "mx2.example.net", "selector": "arc", "private_key": str(key)}
        return self.harness(spf="tag", dkim="tag", arc=arc, **more)

    @defer.inlineCallbacks
    def deliver(self, h: Harness, message: bytes, ip: str = "127.0.0.5", bdat: bool = False) -> Any:
        conn = h.connect(ip)
        lines = yield self.mail(conn, "a@pass.test")
        assert lines[-1].startswith("250")
        if bdat:  # two chunks, split inside the header section
            assert conn.send(b"RCPT TO:<u@example.com>\r\n")[-1].startswith("250")
            one, two = message[:40], message[40:]
            conn.proto.dataReceived(b"BDAT %d\r\n" % len(one) + one)
            conn.proto.dataReceived(b"BDAT %d LAST\r\n" % len(two) + two)
        else:
            assert conn.send(b"RCPT TO:<u@example.com>\r\nDATA\r\n")[-1].startswith("354")
            stuffed = message.replace(b"\r\n.", b"\r\n..")
            conn.proto.dataReceived(stuffed + b".\r\n")
        lines: list[str] = []
        for _ in range(200):
            lines += conn.read()
            if len(lines) >= (2 if bdat else 1):  # BDAT: the first chunk's 250, then LAST's
                break
            yield deferLater(0.01)
        assert lines[-1].startswith("250"), lines
        (name,) = os.listdir(os.path.join(h.config.server.spool, "new"))
        return Path(h.config.server.spool, "new", name).read_bytes()

    @defer.inlineCallbacks
    def test_signed_message_sealed_and_results_added_body_untouched(self):
        h = self.sealing()
        message = signed_message()
        stored = yield self.deliver(h, message)
        lines = stored.split(b"\r\n\r\n")[0].split(b"\r\n")
        names = [line.split(b":")[0] for line in lines if line[:1] not in b" \t"]
        assert names[:5] == [
            b"ARC-Seal", b"ARC-Message-Signature", b"ARC-Authentication-Results",
            b"Authentication-Results", b"Received",
        ]  # fmt: skip
        head = stored.split(b"Received:")[0]
        assert b"spf=pass smtp.mailfrom=pass.test" in head
        assert b"dkim=pass header.d=pass.test" in head and b"arc=none" in head
        assert b"(forged)" not in stored  # the forged A-R in our name is gone
        assert stored.endswith(b"\r\n\r\nHello.\r\n")
        lookup = txt_lookup(self.dns.zone)
        assert dkim.verify(stored, dnsfunc=lookup)  # the sender's signature still holds
        cv, _, reason = dkim.arc_verify(stored, dnsfunc=lookup)
        assert cv == dkim.CV_Pass, reason
        assert h.factory.stats.check_results[("dkim", "pass")] == 1

    @defer.inlineCallbacks
    def test_bdat_messages_are_checked_sealed_and_cleaned_like_data(self):
        h = self.sealing()
        stored = yield self.deliver(h, signed_message(), bdat=True)
        assert stored.startswith(b"ARC-Seal:") and b"(forged)" not in stored
        assert b"dkim=pass header.d=pass.test" in stored.split(b"Received:")[0]
        lookup = txt_lookup(self.dns.zone)
        assert dkim.verify(stored, dnsfunc=lookup)
        assert dkim.arc_verify(stored, dnsfunc=lookup)[0] == dkim.CV_Pass

    @defer.inlineCallbacks
    def test_a_spilled_message_is_sealed_too(self):
        h = self.sealing()
        body = b"".join(b"line %06d of a long message\r\n" % i for i in range(12000))
        stored = yield self.deliver(h, signed_message(body))
        assert len(stored) > 300_000 and stored.startswith(b"ARC-Seal:")
        lookup = txt_lookup(self.dns.zone)
        assert dkim.verify(stored, dnsfunc=lookup)
        assert dkim.arc_verify(stored, dnsfunc=lookup)[0] == dkim.CV_Pass

    @defer.inlineCallbacks
    def test_a_broken_signature_is_a_fail_never_a_refusal(self):
        h = self.harness(dkim="tag")
        message = signed_message().replace(b"Hello.", b"Hullo.")
        stored = yield self.deliver(h, message)
        assert stored.startswith(b"Authentication-Results: mx2.example.net;\r\n\tdkim=fail")

    @defer.inlineCallbacks
    def test_exempt_clients_get_no_results_and_keep_their_headers(self):
        h = self.sealing(exempt_ranges=["Trusted"])
        stored = yield self.deliver(h, signed_message(), ip="127.0.0.3")
        assert stored.startswith(b"Received:") and b"(forged)" in stored
