"""The client against a scripted peer: a ``StringTransport`` fed one reply at a time, on a
``MemoryReactorClock`` (the injected reactor: it records the connection, runs the timers)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase
from wirecase import SENDER, collect, ready_now

from mxbackup.wire.client import deliver
from mxbackup.wire.contract import Attempt, Candidate, Job, Outcome, Settings

GREETING_AND_EHLO = b"220 x ESMTP\r\n250-x\r\n250 PIPELINING\r\n"


class ScriptedCase(SynchronousTestCase):
    """A session against a scripted peer: ``session`` starts it, ``end`` loses it."""

    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="mx-scripted-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self.outcomes: dict[str, Mapping[str, Outcome]] = {}
        self.attempts: list[Attempt] = []
        self._qids: list[str] = []

    def session(
        self, jobs: list[Job], settings: Settings | None = None, ready: Any = ready_now
    ) -> tuple[Any, StringTransport]:
        settings = settings or Settings("mx2.example.net", reply_timeout=10.0)
        self.reactor = MemoryReactorClock()
        self.delivery = deliver(
            self.reactor, [Candidate("x", "127.0.0.1", 25)], settings, jobs, ready
        )
        collect(self, self.delivery, jobs, self.outcomes).addCallback(self.attempts.append)
        ((host, port, factory, timeout, _),) = self.reactor.tcpClients
        self.assertEqual((host, port, timeout), ("127.0.0.1", 25, settings.connect_timeout))
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        return proto, transport

    def end(self, proto: Any) -> Attempt:
        proto.connectionLost(Failure(ConnectionDone()))
        (attempt,) = self.attempts
        self.assertEqual(self.reactor.getDelayedCalls(), [])  # no reply timer left behind
        return attempt

    def job(self, rcpt: str = "bob@example.com", body: bytes | None = None) -> Job:
        """Q1, Q2...; without ``body`` its file does not exist (it must not be read)."""
        qid = f"Q{len(self._qids) + 1}"
        self._qids.append(qid)
        path = self.tmp / qid
        if body is not None:
            path.write_bytes(body)
        return Job(qid, SENDER, (rcpt,), str(path), len(body or b"0123456789"))


class ScriptedSessionTests(ScriptedCase):
    def test_refused_ehlo_and_helo_end_the_session_and_count(self) -> None:
        job = self.job()
        proto, t = self.session([job])
        proto.dataReceived(b"220 x ESMTP\r\n")
        proto.dataReceived(b"550 5.7.1 no EHLO for you\r\n")
        self.assertIn(b"HELO ", t.value())
        t.clear()
        proto.dataReceived(b"550 5.7.1 no HELO either\r\n")
        self.assertNotIn(b"HELO", t.value())  # Twisted would send HELO again, for ever
        attempt = self.end(proto)
        self.assertTrue(self.outcomes["Q1"]["bob@example.com"].tried)
        self.assertTrue(attempt.broken or not attempt.connected)
        self.assertIn("550 5.7.1 no HELO either", attempt.error)

    def test_helo_when_ehlo_is_refused(self) -> None:
        job = self.job()
        proto, t = self.session([job])
        proto.dataReceived(b"220 x SMTP\r\n500 what is EHLO\r\n")
        t.clear()
        proto.dataReceived(b"250 x\r\n")  # HELO accepted: no extensions, serial commands
        self.assertEqual(t.value(), b"MAIL FROM:<" + SENDER.encode() + b">\r\n")

    def test_probe_cut_before_quit_is_answered_is_not_up(self) -> None:
        proto, t = self.session([])
        proto.dataReceived(b"220 x ESMTP\r\n")
        proto.dataReceived(b"250 x\r\n")
        self.assertIn(b"QUIT", t.value())
        attempt = self.end(proto)  # no 221
        self.assertTrue(attempt.broken)

    def test_probe_answered_is_up(self) -> None:
        proto, t = self.session([])
        proto.dataReceived(b"220 x ESMTP\r\n250 x\r\n221 bye\r\n")
        self.assertTrue(t.disconnecting)
        attempt = self.end(proto)
        self.assertTrue(attempt.connected)
        self.assertFalse(attempt.broken)
        self.assertEqual(attempt.error, "")

    def test_421_to_the_lone_dot_sends_no_more_mail(self) -> None:
        first, second = self.job("x@example.com"), self.job("y@example.com")
        proto, t = self.session([first, second])
        proto.dataReceived(GREETING_AND_EHLO)
        proto.dataReceived(b"250 ok\r\n550 5.1.1 no\r\n354 go\r\n")  # MAIL, RCPT, DATA
        self.assertTrue(t.value().endswith(b".\r\n"))  # the lone dot
        t.clear()
        proto.dataReceived(b"421 4.3.2 closing\r\n")
        self.assertNotIn(b"MAIL", t.value())
        self.end(proto)
        self.assertEqual(self.outcomes["Q1"]["x@example.com"].code, 550)
        self.assertFalse(self.outcomes["Q2"]["y@example.com"].tried)

    def test_mail_waits_for_ready(self) -> None:
        opened: defer.Deferred[None] = defer.Deferred()
        proto, t = self.session([self.job()], ready=lambda: opened)
        proto.dataReceived(b"220 primary.test ESMTP\r\n")
        proto.dataReceived(b"250-primary.test\r\n250 PIPELINING\r\n")
        self.assertTrue(t.value().startswith(b"EHLO"))
        self.assertNotIn(b"MAIL", t.value())  # EHLO done, the barrier holds
        self.assertEqual(self.reactor.getDelayedCalls(), [])  # nothing awaited: no timer
        self.reactor.advance(3600)  # the target is not to blame for our disk
        self.assertFalse(t.disconnecting)
        opened.callback(None)
        self.assertIn(b"MAIL FROM:<" + SENDER.encode() + b">", t.value())
        self.assertIn(b"RCPT TO:<bob@example.com>\r\nDATA\r\n", t.value())
        self.assertEqual(len(self.reactor.getDelayedCalls()), 1)  # the replies are awaited
        self.end(proto)

    def test_a_reply_while_waiting_for_ready_ends_the_session_once(self) -> None:
        opened: defer.Deferred[None] = defer.Deferred()
        proto, t = self.session([self.job()], ready=lambda: opened)
        proto.dataReceived(GREETING_AND_EHLO)
        t.clear()
        proto.dataReceived(b"421 4.4.2 idle too long\r\n")  # unasked for, during the wait
        opened.callback(None)
        self.assertNotIn(b"MAIL", t.value())
        self.assertEqual(t.value(), b"QUIT\r\n")
        attempt = self.end(proto)
        self.assertFalse(self.outcomes["Q1"]["bob@example.com"].tried)
        self.assertEqual(attempt.error, "auth: 421 4.4.2 idle too long")  # as with Twisted

    def test_many_jobs_behind_a_failed_ready(self) -> None:
        failed = defer.fail(OSError(28, "No space left on device"))
        failed.addErrback(lambda f: f)  # handed out once, consumed by the client
        jobs = [Job(f"Q{i}", SENDER, ("bob@example.com",), "/nonexistent", 10) for i in range(3000)]
        proto, t = self.session(jobs, ready=lambda: failed)
        proto.dataReceived(GREETING_AND_EHLO)  # no RecursionError
        self.assertNotIn(b"MAIL", t.value())
        self.assertIn(b"QUIT", t.value())
        self.assertTrue(all(r.called for r in self.delivery.results))
        self.end(proto)

    def test_ready_failing_synchronously_is_a_failure_too(self) -> None:
        def ready() -> defer.Deferred[None]:
            raise OSError(5, "Input/output error")

        proto, t = self.session([self.job()], ready=ready)
        proto.dataReceived(GREETING_AND_EHLO)
        outcome = self.outcomes["Q1"]["bob@example.com"]
        self.assertEqual((outcome.kind, outcome.tried), ("tempfail", False))
        self.assertEqual(outcome.text, "local: [Errno 5] Input/output error")
        self.end(proto)

    def test_reply_timeout_runs_on_the_injected_clock(self) -> None:
        proto, t = self.session([self.job()])
        proto.dataReceived(b"220 x ESMTP\r\n")  # EHLO sent, its reply awaited
        self.reactor.advance(9.9)
        self.assertFalse(t.disconnecting)
        proto.dataReceived(b"250-x\r\n")  # a line of the reply is progress: the timer restarts
        self.reactor.advance(9.9)
        self.assertFalse(t.disconnecting)
        self.reactor.advance(0.2)
        self.assertTrue(t.disconnected)  # aborted: a stalled target never reads our QUIT
        attempt = self.end(proto)
        self.assertEqual(attempt.error, "x[127.0.0.1]:25: greeting: timed out")
        self.assertFalse(attempt.connected)

    def test_results_fire_per_job_while_the_session_goes_on(self) -> None:
        jobs = [self.job(body=b"Subject: one\r\n\r\n1\r\n"), self.job(body=b"2\r\n")]
        proto, t = self.session(jobs)
        proto.dataReceived(GREETING_AND_EHLO)
        proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n")
        self.assertTrue(t.value().endswith(b"1\r\n.\r\n"))
        t.clear()
        self.assertFalse(self.delivery.results[0].called)
        proto.dataReceived(b"250 2.0.0 queued\r\n")
        self.assertTrue(self.delivery.results[0].called)  # recorded while the session goes on
        self.assertEqual(self.outcomes["Q1"]["bob@example.com"].reply, "250 2.0.0 queued")
        self.assertFalse(self.delivery.results[1].called)
        self.assertFalse(self.delivery.done.called)
        self.assertTrue(t.value().startswith(b"MAIL FROM:"))  # no RSET after a completed one
        proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n250 ok\r\n221 bye\r\n")
        self.assertTrue(self.delivery.results[1].called)
        attempt = self.end(proto)
        self.assertTrue(attempt.connected)
        self.assertFalse(attempt.broken)

    def test_multiline_replies_and_several_replies_a_packet(self) -> None:
        job = self.job(body=b"x\r\n")
        proto, t = self.session([job])
        proto.dataReceived(b"220-x ESMTP\r\n220 more\r\n250-x\r\n250-SIZE 100\r\n250 8BITMIME\r\n")
        self.assertEqual(t.value().splitlines()[-1], b"MAIL FROM:<" + SENDER.encode() + b"> SIZE=3")
        proto.dataReceived(b"250 ok\r\n")
        proto.dataReceived(b"550-5.1.1 no such\r\n550 5.1.1 user here\r\n")
        self.assertEqual(
            self.outcomes["Q1"]["bob@example.com"].reply, "550 5.1.1 no such 5.1.1 user here"
        )

    def test_garbage_instead_of_a_reply_ends_the_session(self) -> None:
        proto, t = self.session([self.job()])
        proto.dataReceived(b"HTTP/1.1 400 Bad Request\r\n")
        self.assertTrue(t.disconnected)
        attempt = self.end(proto)
        self.assertFalse(attempt.connected)
        self.assertIn("greeting: not an SMTP reply", attempt.error)

    def test_plain_text_after_the_starttls_reply_is_not_taken_for_tls(self) -> None:
        """What follows the 220 in the same packet was sent before the handshake: the client
        must not read it as the first reply inside TLS (LineReceiver.clearLineBuffer)."""
        settings = Settings(
            "mx2.example.net", security="starttls_required", verify_certificate=False
        )
        proto, t = self.session([self.job()], settings)
        proto.dataReceived(b"220 x ESMTP\r\n250-x\r\n250 STARTTLS\r\n")
        self.assertTrue(t.value().endswith(b"STARTTLS\r\n"))
        t.clear()
        proto.dataReceived(b"220 go ahead\r\n250-forged\r\n250 AUTH PLAIN\r\n")
        self.assertEqual(t.value(), b"")  # no EHLO, no MAIL
        self.assertTrue(t.disconnected)
        attempt = self.end(proto)
        self.assertFalse(attempt.connected)
        self.assertIn("starttls: data after the reply to STARTTLS", attempt.error)

    def test_connection_lost_while_waiting_for_ready(self) -> None:
        opened: defer.Deferred[None] = defer.Deferred()
        proto, t = self.session([self.job(), self.job()], ready=lambda: opened)
        proto.dataReceived(GREETING_AND_EHLO)
        attempt = self.end(proto)  # the target hangs up while our disk is slow
        self.assertTrue(attempt.connected)
        self.assertTrue(attempt.broken)
        self.assertEqual(attempt.error, "auth: connection closed by the target")  # as Twisted
        for qid in ("Q1", "Q2"):
            outcome = self.outcomes[qid]["bob@example.com"]
            self.assertEqual((outcome.kind, outcome.tried), ("tempfail", False))
        opened.callback(None)  # too late: nothing happens
        self.assertNotIn(b"MAIL", t.value())

    def test_a_refused_rset_ends_the_session(self) -> None:
        first, second = self.job("x@example.com"), self.job()
        proto, t = self.session([first, second])
        proto.dataReceived(GREETING_AND_EHLO)
        proto.dataReceived(b"250 ok\r\n550 5.1.1 no\r\n503 5.5.1 no valid recipients\r\n")
        self.assertTrue(t.value().endswith(b"RSET\r\n"))  # MAIL was accepted: still open
        t.clear()
        proto.dataReceived(b"500 5.5.1 what\r\n")
        self.assertEqual(t.value(), b"QUIT\r\n")
        attempt = self.end(proto)
        self.assertTrue(attempt.broken)
        self.assertEqual(self.outcomes["Q1"]["x@example.com"].code, 550)
        self.assertFalse(self.outcomes["Q2"]["bob@example.com"].tried)


class ScriptedEndTests(ScriptedCase):
    """How the session ends: no QUIT out of turn, the error texts, the results' ``at_end``."""

    def test_421_to_a_pipelined_rcpt_closes_without_quit(self) -> None:
        """Replies are still due (here a 354 to DATA follows the 421): a QUIT would be read as
        the message, and its reply awaited for a reply timeout.  The client closes instead."""
        job = Job("Q1", SENDER, ("bob@example.com", "carol@example.com"), "/nonexistent", 10)
        proto, t = self.session([job])
        proto.dataReceived(GREETING_AND_EHLO)
        t.clear()
        proto.dataReceived(b"250 ok\r\n250 ok\r\n421 4.3.2 closing\r\n")  # MAIL, RCPT, RCPT
        self.assertEqual(t.value(), b"")
        self.assertTrue(t.disconnecting)
        proto.dataReceived(b"354 go\r\n")
        self.assertEqual(t.value(), b"")  # nothing, not the message either
        attempt = self.end(proto)
        self.assertTrue(attempt.broken)
        self.assertEqual(attempt.error, "rcpt: 421 4.3.2 closing")
        self.assertTrue(self.outcomes["Q1"]["bob@example.com"].tried)

    def test_refused_greeting_gets_no_quit(self) -> None:
        proto, t = self.session([self.job()])
        proto.dataReceived(b"421 4.3.2 busy\r\n")
        self.assertEqual(t.value(), b"")
        self.assertTrue(t.disconnecting)
        attempt = self.end(proto)
        self.assertFalse(attempt.connected)

    # -- error texts: the stage as it was with Twisted ---------------------------------------
    def test_probe_lost_after_ehlo_reads_auth(self) -> None:
        """After EHLO the stage is "auth" until MAIL, with or without credentials."""
        proto, t = self.session([])
        proto.dataReceived(GREETING_AND_EHLO)
        self.assertEqual(t.value().splitlines()[-1], b"QUIT")
        attempt = self.end(proto)
        self.assertTrue(attempt.broken)
        self.assertEqual(attempt.error, "auth: connection closed by the target")

    def test_errors_between_transactions_read_mail(self) -> None:
        first, second = self.job("x@example.com"), self.job()
        proto, t = self.session([first, second])
        proto.dataReceived(GREETING_AND_EHLO)
        proto.dataReceived(b"250 ok\r\n550 5.1.1 no\r\n503 5.5.1 no valid recipients\r\n")
        proto.dataReceived(b"554 5.5.1 RSET refused\r\n")
        attempt = self.end(proto)
        self.assertEqual(attempt.error, "mail: 554 5.5.1 RSET refused")
        self.assertEqual(self.outcomes["Q2"]["bob@example.com"].text, attempt.error)

    def test_lost_after_the_last_transaction_reads_mail(self) -> None:
        proto, t = self.session([self.job(body=b"x\r\n")])
        proto.dataReceived(GREETING_AND_EHLO)
        proto.dataReceived(b"250 ok\r\n250 ok\r\n354 go\r\n250 2.0.0 queued\r\n")
        self.assertTrue(t.value().endswith(b"QUIT\r\n"))
        attempt = self.end(proto)  # no 221
        self.assertFalse(attempt.broken)  # every job done
        self.assertEqual(attempt.error, "mail: connection closed by the target")

    def test_421_to_the_lone_dot_reads_mail(self) -> None:
        first, second = self.job("x@example.com"), self.job()
        proto, t = self.session([first, second])
        proto.dataReceived(GREETING_AND_EHLO)
        proto.dataReceived(b"250 ok\r\n550 5.1.1 no\r\n354 go\r\n421 4.3.2 closing\r\n")
        attempt = self.end(proto)
        self.assertEqual(attempt.error, "mail: 421 4.3.2 closing")
        self.assertEqual(self.outcomes["Q2"]["bob@example.com"].text, attempt.error)

    def test_results_the_end_of_the_session_decides_say_so(self) -> None:
        """``at_end``: the caller records those after the session's Attempt."""
        first, second = self.job("x@example.com"), self.job()
        proto, t = self.session([first, second])
        proto.dataReceived(GREETING_AND_EHLO)
        proto.dataReceived(b"250 ok\r\n550 5.1.1 no\r\n503 5.5.1 no valid recipients\r\n")
        self.assertFalse(self.delivery.results[0].result.at_end)  # its transaction ended
        proto.dataReceived(b"554 5.5.1 RSET refused\r\n")
        self.assertFalse(self.end(proto).local_error)
        self.assertTrue(self.delivery.results[1].result.at_end)  # the session's end did it
