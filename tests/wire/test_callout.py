"""Recipient callouts against a scripted primary on real 127.0.0.1 sockets: what each reply
means, that no message is ever left (never DATA), connection reuse, TLS/AUTH by the route's
rules, timeouts and unreachable targets."""

from __future__ import annotations

import tempfile
from pathlib import Path

from fakeprimary import FakePrimary, TestCA
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase
from wirecase import WireTestCase, closed_port

from helpers import base_config
from mxbackup import config as config_module
from mxbackup.wire.callout import Callouts
from mxbackup.wire.contract import Candidate


def route_for(port: int, **extra):
    data = base_config(Path(tempfile.mkdtemp()))
    data["routes"] = [
        {
            "domain": "example.com",
            "target_host": "127.0.0.1",
            "port": port,
            "verify_recipients": {"timeout": 2, **extra.pop("verify", {})},
            **extra,
        }
    ]
    return config_module.parse(data, "test.yaml").routes[0]


def candidates_of(*ports: int):
    def candidates(route):
        return defer.succeed([Candidate("mx.primary.test", "127.0.0.1", p) for p in ports])

    return candidates


class CalloutTests(TestCase):
    def setUp(self):
        self.primary = FakePrimary(
            rcpt_replies={
                "nobody@example.com": (550, "5.1.1 <nobody@example.com>: user unknown"),
                "later@example.com": (451, "4.3.0 try later"),
            }
        ).listen(reactor)
        self.addCleanup(self.primary.stop)
        self.callouts = Callouts(reactor, candidates_of(self.primary.portnum), "mx2.example.net")
        self.addCleanup(self.callouts.close)

    def route(self, **extra):
        return route_for(self.primary.portnum, **extra)

    @defer.inlineCallbacks
    def test_accepted_refused_unreachable(self):
        route = self.route()
        ok = yield self.callouts.verify(route, "bob@example.com")
        self.assertEqual((ok.kind, ok.code), ("accepted", 250))
        no = yield self.callouts.verify(route, "nobody@example.com")
        self.assertEqual((no.kind, no.code), ("refused", 550))
        self.assertIn("user unknown", no.text)
        later = yield self.callouts.verify(route, "later@example.com")
        self.assertEqual((later.kind, later.code), ("unreachable", 451))

    @defer.inlineCallbacks
    def test_never_data_null_sender_and_one_connection_reused(self):
        route = self.route()
        for name in ("a", "b", "c"):
            yield self.callouts.verify(route, f"{name}@example.com")
        commands = self.primary.commands()
        self.assertNotIn(b"DATA", commands)
        self.assertEqual(self.primary.transactions, [])
        self.assertEqual(self.primary.connections, 1)
        self.assertEqual(commands.count(b"MAIL FROM:<>"), 3)
        self.assertIn(b"RSET", commands)

    @defer.inlineCallbacks
    def test_configured_sender(self):
        yield self.callouts.verify(
            self.route(verify={"sender": "verify@mx2.example.net"}), "a@example.com"
        )
        self.assertIn(b"MAIL FROM:<verify@mx2.example.net>", self.primary.commands())

    @defer.inlineCallbacks
    def test_u_label_domain_asked_in_a_labels_of_a_target_without_smtputf8(self):
        """Regression (issue 13): only a UTF-8 local part needs SMTPUTF8."""
        route = self.route()
        ok = yield self.callouts.verify(route, "bob@m\u00fcller.example")
        self.assertEqual(ok.kind, "accepted")
        self.assertIn(b"RCPT TO:<bob@xn--mller-kva.example>", self.primary.commands())
        no = yield self.callouts.verify(route, "j\u00f6rg@m\u00fcller.example")
        self.assertEqual(no.kind, "unreachable")

    @defer.inlineCallbacks
    def test_a_kept_connection_that_went_is_replaced(self):
        route = self.route()
        yield self.callouts.verify(route, "a@example.com")
        for proto in list(self.primary.open):
            proto.transport.loseConnection()
        yield self.primary.stop()  # wait until it is gone; then listen again on a new port
        self.primary = FakePrimary().listen(reactor)
        self.addCleanup(self.primary.stop)
        self.callouts.candidates = candidates_of(self.primary.portnum)
        answer = yield self.callouts.verify(self.route(), "b@example.com")
        self.assertEqual(answer.kind, "accepted")

    @defer.inlineCallbacks
    def test_no_target_listening_is_unreachable(self):
        self.callouts.candidates = candidates_of(closed_port())
        answer = yield self.callouts.verify(self.route(), "a@example.com")
        self.assertEqual(answer.kind, "unreachable")
        self.assertIn("connect", answer.text)

    @defer.inlineCallbacks
    def test_targets_in_order(self):
        self.callouts.candidates = candidates_of(closed_port(), self.primary.portnum)
        answer = yield self.callouts.verify(self.route(), "a@example.com")
        self.assertEqual(answer.kind, "accepted")

    @defer.inlineCallbacks
    def test_a_silent_target_costs_at_most_the_timeout(self):
        silent = FakePrimary(greeting=None).listen(reactor)
        self.addCleanup(silent.stop)
        self.callouts.candidates = candidates_of(silent.portnum)
        started = reactor.seconds()
        route = route_for(silent.portnum, verify={"timeout": 0.3})
        answer = yield self.callouts.verify(route, "a@example.com")
        self.assertEqual(answer.kind, "unreachable")
        self.assertLess(reactor.seconds() - started, 1.5)

    @defer.inlineCallbacks
    def test_mail_refused_is_unreachable(self):
        self.primary.mail_reply = (550, "5.7.1 no null sender here")
        answer = yield self.callouts.verify(self.route(), "a@example.com")
        self.assertEqual(answer.kind, "unreachable")

    @defer.inlineCallbacks
    def test_auth_over_starttls_as_delivery_does(self):
        ca = TestCA(Path(tempfile.mkdtemp()))
        secure = FakePrimary(
            tls_context=ca.server_context("mx.primary.test"),
            credentials={b"backup": b"secret"},
        ).listen(reactor)
        self.addCleanup(secure.stop)
        self.callouts.candidates = candidates_of(secure.portnum)
        route = route_for(
            secure.portnum,
            security="starttls_required",
            verify_certificate=False,
            authentication={"username": "backup", "password": "secret"},
        )
        answer = yield self.callouts.verify(route, "a@example.com")
        self.assertEqual(answer.kind, "accepted")
        self.assertTrue(secure.sessions[0].tls)
        self.assertEqual(secure.sessions[0].auth, b"backup")

    @defer.inlineCallbacks
    def test_required_tls_not_offered_is_unreachable(self):
        route = self.route(security="starttls_required", verify_certificate=False)
        answer = yield self.callouts.verify(route, "a@example.com")
        self.assertEqual(answer.kind, "unreachable")
        self.assertNotIn(b"MAIL FROM:<>", self.primary.commands())


class AtRcptTests(WireTestCase):
    """Delivery marks the outcomes that are the target's answer to RCPT itself (what
    verification learns negative entries from), and only those."""

    @defer.inlineCallbacks
    def test_rcpt_refusals_are_marked(self):
        for pipelining in (True, False):
            p = self.primary(
                pipelining=pipelining,
                rcpt_replies={"gone@example.com": (550, "5.1.1 no such user")},
            )
            job = self.job(("ok@example.com", "gone@example.com"))
            yield self.deliver(p, [job])
            out = self.out(job)
            self.assertTrue(out["gone@example.com"].at_rcpt)
            self.assertEqual(out["gone@example.com"].kind, "permfail")
            self.assertFalse(out["ok@example.com"].at_rcpt)

    @defer.inlineCallbacks
    def test_data_and_mail_refusals_are_not(self):
        p = self.primary(data_reply=(554, "5.7.1 spam"))
        job = self.job(("ok@example.com",))
        yield self.deliver(p, [job])
        self.assertFalse(self.out(job)["ok@example.com"].at_rcpt)
        p2 = self.primary(mail_reply=(550, "5.7.1 not you"))
        job2 = self.job(("ok@example.com",))
        yield self.deliver(p2, [job2])
        self.assertFalse(self.out(job2)["ok@example.com"].at_rcpt)
