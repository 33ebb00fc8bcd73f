"""Delivery over TLS (STARTTLS, implicit TLS, verification) and AUTH, against the scripted
primary on real 127.0.0.1 sockets."""

from __future__ import annotations

import base64
from typing import Any

from fakeprimary import FakePrimary, TestCA
from OpenSSL import SSL
from twisted.internet import defer
from wirecase import (
    MESSAGE,
    NAME,
    PASSWORD,
    USER,
    WireTestCase,
    body_with_dots_at_chunk_boundaries,
)

from mxbackup.wire.contract import Settings


class TLSTests(WireTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.ca = TestCA(self.tmp)

    def tls_settings(self, security: str, **kw: Any) -> Settings:
        return self.settings(
            security=security, verify_certificate=True, ca_file=str(self.ca.ca_file), **kw
        )

    @defer.inlineCallbacks
    def test_starttls_required_verified(self) -> Any:
        primary = self.primary(tls_context=self.ca.server_context(NAME))
        job = self.job()
        attempt = yield self.deliver(primary, [job], self.tls_settings("starttls_required"))
        self.assertTrue(attempt.connected)
        self.assertFalse(attempt.tls_failed)
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertEqual(len(primary.complete), 1)
        self.assertTrue(primary.complete[0].tls)
        self.assertEqual(primary.complete[0].message, MESSAGE)
        commands = primary.sessions[0].commands
        self.assertEqual(commands[1], b"STARTTLS")
        self.assertEqual(commands[2], b"EHLO mx2.example.net")  # EHLO again inside TLS

    @defer.inlineCallbacks
    def test_starttls_required_wrong_name_is_refused(self) -> Any:
        primary = self.primary(tls_context=self.ca.server_context("other.example.org"))
        job = self.job()
        attempt = yield self.deliver(primary, [job], self.tls_settings("starttls_required"))
        self.assertFalse(attempt.connected)
        self.assertEqual(self.kinds(job), {"bob@example.com": "tempfail"})
        self.assertEqual(primary.transactions, [])
        self.assertEqual(primary.connections, 1)  # no plain-text second try
        self.assertIn(
            "starttls: TLS certificate not valid for the target's name (hostname mismatch: "
            f"{NAME}) (certificate: subject CN=other.example.org, issuer CN=mxbackup test CA)",
            self.out(job)["bob@example.com"].text,
        )
        self.assertFalse(any(c.startswith(b"MAIL") for c in primary.commands()))

    @defer.inlineCallbacks
    def test_starttls_required_wrong_name_then_next_candidate(self) -> Any:
        wrong = self.primary(tls_context=self.ca.server_context("other.example.org"))
        right = self.primary(tls_context=self.ca.server_context(NAME))
        job = self.job()
        attempt = yield self.deliver([wrong, right], [job], self.tls_settings("starttls_required"))
        self.assertTrue(attempt.connected)
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertEqual(wrong.transactions, [])
        self.assertTrue(right.complete[0].tls)

    @defer.inlineCallbacks
    def test_starttls_required_not_offered(self) -> Any:
        primary = self.primary()
        job = self.job()
        attempt = yield self.deliver(primary, [job], self.tls_settings("starttls_required"))
        self.assertFalse(attempt.connected)
        self.assertEqual(self.kinds(job), {"bob@example.com": "tempfail"})
        self.assertIn("ehlo: the target does not offer STARTTLS", attempt.error)
        self.assertEqual(primary.transactions, [])

    @defer.inlineCallbacks
    def test_self_signed_certificate_is_refused_when_verifying(self) -> Any:
        (self.tmp / "other").mkdir()
        other_ca = TestCA(self.tmp / "other", name="someone else")
        primary = self.primary(tls_context=other_ca.server_context(NAME))
        job = self.job()
        yield self.deliver(primary, [job], self.tls_settings("starttls_required"))
        self.assertEqual(self.kinds(job), {"bob@example.com": "tempfail"})
        text = self.out(job)["bob@example.com"].text
        # which check failed, and whose certificate it was (the operator's clue: another CA)
        self.assertIn(
            "starttls: TLS certificate verification failed: unable to get local issuer certificate",
            text,
        )
        self.assertIn(f"subject CN={NAME}, issuer CN=someone else", text)
        self.assertEqual(primary.transactions, [])

    @defer.inlineCallbacks
    def test_unverified_tls_accepts_any_certificate(self) -> Any:
        primary = self.primary(tls_context=self.ca.server_context("other.example.org"))
        job = self.job()
        settings = self.settings(security="starttls_required", verify_certificate=False)
        yield self.deliver(primary, [job], settings)
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertTrue(primary.complete[0].tls)

    @defer.inlineCallbacks
    def test_opportunistic_not_offered_is_plain_text(self) -> Any:
        primary = self.primary()
        job = self.job()
        attempt = yield self.deliver(primary, [job], self.tls_settings("starttls"))
        self.assertTrue(attempt.connected)
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertFalse(primary.complete[0].tls)
        self.assertEqual(primary.connections, 1)

    @defer.inlineCallbacks
    def test_opportunistic_uses_tls_when_offered(self) -> Any:
        primary = self.primary(tls_context=self.ca.server_context(NAME))
        job = self.job()
        yield self.deliver(primary, [job], self.tls_settings("starttls"))
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertTrue(primary.complete[0].tls)

    @defer.inlineCallbacks
    def test_opportunistic_handshake_failure_falls_back_to_plain_text(self) -> Any:
        primary = self.primary(tls_context=self.ca.server_context("other.example.org"))
        job = self.job()
        attempt = yield self.deliver(primary, [job], self.tls_settings("starttls"))
        self.assertTrue(attempt.connected)
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertEqual(primary.connections, 2)  # a new connection for the plain-text try
        self.assertIn(b"STARTTLS", primary.sessions[0].commands)
        self.assertNotIn(b"STARTTLS", primary.sessions[1].commands)
        self.assertEqual(len(primary.complete), 1)
        self.assertFalse(primary.complete[0].tls)
        self.assertEqual(primary.complete[0].connection, 2)

    def cbc_only(self) -> Any:
        """A primary that speaks only TLS 1.2 with a CBC suite (an old server)."""
        context = self.ca.server_context(NAME)
        context.getContext().set_max_proto_version(SSL.TLS1_2_VERSION)
        context.getContext().set_cipher_list(b"ECDHE-ECDSA-AES128-SHA")
        return context

    @defer.inlineCallbacks
    def test_verified_delivery_refuses_cbc_suites(self) -> Any:
        primary = self.primary(tls_context=self.cbc_only())
        job = self.job()
        attempt = yield self.deliver(primary, [job], self.tls_settings("starttls_required"))
        self.assertEqual(self.kinds(job), {"bob@example.com": "tempfail"})
        self.assertFalse(attempt.connected)
        self.assertEqual(primary.transactions, [])

    @defer.inlineCallbacks
    def test_unverified_delivery_accepts_cbc_suites(self) -> Any:
        primary = self.primary(tls_context=self.cbc_only())
        job = self.job()
        settings = self.settings(security="starttls_required", verify_certificate=False)
        yield self.deliver(primary, [job], settings)
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertTrue(primary.complete[0].tls)

    @defer.inlineCallbacks
    def test_opportunistic_starttls_refused_falls_back(self) -> Any:
        primary = self.primary(tls_context=self.ca.server_context(NAME))
        original = type(primary).buildProtocol

        def build(factory: Any, addr: Any) -> Any:
            proto = original(factory, addr)
            proto.smtp_STARTTLS = lambda arg: proto.reply(454, "4.7.0 TLS not available now")
            return proto

        self.patch(type(primary), "buildProtocol", build)
        job = self.job()
        yield self.deliver(primary, [job], self.tls_settings("starttls"))
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertFalse(primary.complete[0].tls)

    @defer.inlineCallbacks
    def test_implicit_tls(self) -> Any:
        primary = self.primary(implicit_tls=self.ca.server_context(NAME))
        job = self.job()
        attempt = yield self.deliver(primary, [job], self.tls_settings("ssl"))
        self.assertTrue(attempt.connected)
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertTrue(primary.complete[0].tls)
        self.assertNotIn(b"STARTTLS", primary.sessions[0].commands)
        self.assertEqual(primary.complete[0].message, MESSAGE)

    @defer.inlineCallbacks
    def test_implicit_tls_wrong_name_is_refused(self) -> Any:
        primary = self.primary(implicit_tls=self.ca.server_context("other.example.org"))
        job = self.job()
        attempt = yield self.deliver(primary, [job], self.tls_settings("ssl"))
        self.assertFalse(attempt.connected)
        self.assertEqual(self.kinds(job), {"bob@example.com": "tempfail"})
        self.assertIn("TLS certificate not valid for the target's name", attempt.error)
        self.assertEqual(primary.transactions, [])

    @defer.inlineCallbacks
    def test_none_never_sends_starttls(self) -> Any:
        primary = self.primary(tls_context=self.ca.server_context(NAME))
        job = self.job()
        yield self.deliver(primary, [job], self.tls_settings("none"))
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertNotIn(b"STARTTLS", primary.sessions[0].commands)
        self.assertFalse(primary.complete[0].tls)

    @defer.inlineCallbacks
    def test_dots_at_chunk_boundaries_over_tls(self) -> Any:
        body = body_with_dots_at_chunk_boundaries()
        primary = self.primary(tls_context=self.ca.server_context(NAME))
        job = self.job(body=body)
        yield self.deliver(primary, [job], self.tls_settings("starttls_required"))
        self.assertEqual([t.message for t in primary.complete], [body])

    @defer.inlineCallbacks
    def test_streamed_message_over_tls(self) -> Any:
        body = body_with_dots_at_chunk_boundaries(streamed=True)
        primary = self.primary(tls_context=self.ca.server_context(NAME))
        jobs = [self.job(body=body), self.job()]
        yield self.deliver(primary, jobs, self.tls_settings("starttls_required"))
        self.assertEqual([t.message for t in primary.complete], [body, MESSAGE])
        self.assertTrue(all(t.tls for t in primary.complete))


class AuthTests(WireTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.ca = TestCA(self.tmp)

    def auth_settings(self, security: str, password: bytes = PASSWORD, **kw: Any) -> Settings:
        return self.settings(
            security=security,
            verify_certificate=True,
            ca_file=str(self.ca.ca_file),
            username=USER.decode(),
            password=password.decode(),
            **kw,
        )

    def auth_primary(self, mechanisms: tuple[str, ...], tls: bool = True) -> FakePrimary:
        return self.primary(
            tls_context=self.ca.server_context(NAME) if tls else None,
            credentials={USER: PASSWORD},
            auth_mechanisms=mechanisms,
        )

    @defer.inlineCallbacks
    def check_auth_after_tls(self, mechanism: str) -> Any:
        primary = self.auth_primary((mechanism,))
        job = self.job()
        attempt = yield self.deliver(primary, [job], self.auth_settings("starttls_required"))
        self.assertTrue(attempt.connected)
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        session = primary.sessions[0]
        self.assertEqual(session.auth_attempts, [(mechanism.encode(), USER, PASSWORD)])
        txn = primary.complete[0]
        self.assertEqual((txn.tls, txn.auth), (True, USER))
        verbs = [c.split(b" ")[0] for c in session.commands]
        self.assertLess(verbs.index(b"STARTTLS"), verbs.index(b"AUTH"))

    def test_auth_plain_after_starttls(self) -> Any:
        return self.check_auth_after_tls("PLAIN")

    def test_auth_login_after_starttls(self) -> Any:
        return self.check_auth_after_tls("LOGIN")

    @defer.inlineCallbacks
    def test_auth_over_implicit_tls(self) -> Any:
        primary = self.primary(
            implicit_tls=self.ca.server_context(NAME), credentials={USER: PASSWORD}
        )
        job = self.job()
        yield self.deliver(primary, [job], self.auth_settings("ssl"))
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertEqual(primary.complete[0].auth, USER)

    @defer.inlineCallbacks
    def test_no_auth_in_plain_text(self) -> Any:
        primary = self.auth_primary(("PLAIN", "LOGIN"), tls=False)
        for security in ("starttls", "none"):
            job = self.job()
            attempt = yield self.deliver(primary, [job], self.auth_settings(security))
            self.assertFalse(attempt.connected)
            self.assertEqual(self.kinds(job), {"bob@example.com": "tempfail"})
        self.assertEqual(primary.connections, 2)  # no plain-text retry with the password
        for session in primary.sessions:
            self.assertFalse(any(c.upper().startswith(b"AUTH") for c in session.commands))
            self.assertNotIn(base64.b64encode(b"\0" + USER + b"\0" + PASSWORD), session.commands)
        self.assertEqual(primary.transactions, [])

    @defer.inlineCallbacks
    def test_no_auth_in_plain_text_after_failed_handshake(self) -> Any:
        primary = self.primary(
            tls_context=self.ca.server_context("other.example.org"),
            credentials={USER: PASSWORD},
        )
        job = self.job()
        attempt = yield self.deliver(primary, [job], self.auth_settings("starttls"))
        self.assertFalse(attempt.connected)
        self.assertEqual(self.kinds(job), {"bob@example.com": "tempfail"})
        self.assertEqual(primary.connections, 1)
        self.assertEqual(primary.sessions[0].auth_attempts, [])

    @defer.inlineCallbacks
    def test_plaintext_auth_when_the_route_allows_it(self) -> Any:
        for mechanism in ("PLAIN", "LOGIN"):
            primary = self.auth_primary((mechanism,), tls=False)
            job = self.job()
            settings = self.auth_settings("none", allow_plaintext_auth=True)
            attempt = yield self.deliver(primary, [job], settings)
            self.assertTrue(attempt.connected)
            self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
            txn = primary.complete[0]
            self.assertEqual((txn.tls, txn.auth), (False, USER))
            self.assertEqual(
                primary.sessions[0].auth_attempts, [(mechanism.encode(), USER, PASSWORD)]
            )

    @defer.inlineCallbacks
    def test_wrong_password_is_tempfail(self) -> Any:
        primary = self.auth_primary(("PLAIN", "LOGIN"))
        job = self.job(("bob@example.com", "carol@example.com"))
        attempt = yield self.deliver(
            primary, [job], self.auth_settings("starttls_required", password=b"wrong")
        )
        self.assertEqual(set(self.kinds(job).values()), {"tempfail"})
        self.assertEqual(
            self.out(job)["bob@example.com"].text,
            "auth: 535 5.7.8 authentication credentials invalid",
        )
        self.assertFalse(attempt.tls_failed)
        self.assertEqual(primary.transactions, [])
        self.assertEqual(primary.connections, 1)
        # A refusal, not a lost connection: the try counts (retries run out, then a DSN),
        # and the target is not usable as it is.
        self.assertTrue(all(o.tried for o in self.out(job).values()))
        self.assertTrue(attempt.broken)

    @defer.inlineCallbacks
    def test_probe_with_a_wrong_password_does_not_find_the_target_up(self) -> Any:
        primary = self.auth_primary(("PLAIN", "LOGIN"))
        settings = self.auth_settings("starttls_required", password=b"wrong")
        attempt = yield self.deliver(primary, [], settings)
        self.assertTrue(attempt.connected)
        self.assertTrue(attempt.broken)  # the scheduler's probe: still down

    @defer.inlineCallbacks
    def test_wrong_password_opportunistic_is_not_retried_in_plain_text(self) -> Any:
        primary = self.auth_primary(("PLAIN",))
        job = self.job()
        settings = self.auth_settings("starttls", password=b"wrong", allow_plaintext_auth=True)
        attempt = yield self.deliver(primary, [job], settings)
        self.assertFalse(attempt.tls_failed)
        self.assertEqual(self.kinds(job), {"bob@example.com": "tempfail"})
        self.assertEqual(primary.connections, 1)
        self.assertTrue(all(s.tls for s in primary.sessions))

    @defer.inlineCallbacks
    def test_auth_required_but_not_offered(self) -> Any:
        primary = self.primary(tls_context=self.ca.server_context(NAME))  # no AUTH at all
        job = self.job()
        yield self.deliver(primary, [job], self.auth_settings("starttls_required"))
        self.assertEqual(self.kinds(job), {"bob@example.com": "tempfail"})
        self.assertEqual(primary.transactions, [])
