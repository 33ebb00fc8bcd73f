"""How a session ends, on real 127.0.0.1 sockets, with the client's timers on a Clock (the
test moves time; nothing sleeps): a closing connection never hangs (a TLS peer that answers
QUIT and then neither reads nor closes is aborted after the reply timeout), and no QUIT goes
to a target that refused its greeting, or into a pipelined group still being answered."""

from __future__ import annotations

from typing import Any

from fakeprimary import FakePrimary, FakePrimaryProtocol, TestCA
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from wirecase import NAME, WireTestCase, collect, ready_now

from mxbackup.wire.client import deliver
from mxbackup.wire.contract import Attempt, Job

REPLY_TIMEOUT = 30.0


class TimersOnClock:
    """The injected reactor: the real one connects, the client's timers run on ``clock``.
    ``closed`` fires when a client protocol closes its connection (``close``)."""

    def __init__(self) -> None:
        self.clock = Clock()
        self.closed: defer.Deferred[None] = defer.Deferred()

    def callLater(self, *args: Any, **kw: Any) -> Any:
        return self.clock.callLater(*args, **kw)

    def seconds(self) -> float:
        return self.clock.seconds()

    def connectTCP(self, host: str, port: int, factory: Any, **kw: Any) -> Any:
        return reactor.connectTCP(host, port, self._watch(factory), **kw)

    def connectSSL(self, host: str, port: int, factory: Any, context: Any, **kw: Any) -> Any:
        return reactor.connectSSL(host, port, self._watch(factory), context, **kw)

    def _watch(self, factory: Any) -> Any:
        build = factory.buildProtocol

        def buildProtocol(addr: Any) -> Any:
            proto = build(addr)
            close = proto.close

            def closing() -> None:
                close()
                if not self.closed.called:
                    self.closed.callback(None)

            proto.close = closing
            return proto

        factory.buildProtocol = buildProtocol
        return factory


class QuitThenMute(FakePrimaryProtocol):
    """Answers QUIT, then neither reads (so never answers the client's TLS close_notify)
    nor closes."""

    def smtp_QUIT(self, arg: bytes) -> None:
        self.reply(221, "2.0.0 bye")
        self.transport.pauseProducing()


class GreetAndStay(FakePrimaryProtocol):
    """Refuses with its greeting (the factory's ``refusal``), then keeps the connection open
    (FakePrimary would close it)."""

    def connectionMade(self) -> None:
        super().connectionMade()  # the factory's greeting is None: it says nothing
        self.factory.greeted.append(self)
        self.reply(*self.factory.refusal)


class PartialData(FakePrimaryProtocol):
    """Keeps the message data received before the connection went."""

    def connectionLost(self, reason: Any = None) -> None:
        if self._in_data_mode() and self.factory.transactions:
            self.factory.transactions[-1].raw = self._data
        super().connectionLost(reason)


class SessionEndTests(WireTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.ca = TestCA(self.tmp)
        self.timers = TimersOnClock()

    def start(self, targets: list[FakePrimary], jobs: list[Job], **kw: Any) -> defer.Deferred:
        settings = self.settings(reply_timeout=REPLY_TIMEOUT, **kw)
        candidates = [self.candidate(t) for t in targets]
        delivery = deliver(self.timers, candidates, settings, jobs, ready_now)
        return collect(self, delivery, jobs, self.outcomes)

    @defer.inlineCallbacks
    def check_tls_quit_then_mute(self, security: str, jobs: list[Job]) -> Any:
        context = self.ca.server_context(NAME)
        if security == "ssl":
            primary = self.primary(implicit_tls=context)
        else:
            primary = self.primary(tls_context=context)
        primary.protocol = QuitThenMute
        done = self.start([primary], jobs, security=security, verify_certificate=False)
        yield self.timers.closed  # the 221 is read: our close_notify is never answered
        self.assertFalse(done.called)
        self.timers.clock.advance(REPLY_TIMEOUT - 1)
        self.assertFalse(done.called)
        self.timers.clock.advance(1)  # the backstop aborts the connection
        attempt: Attempt = yield done
        self.assertTrue(attempt.connected)
        self.assertFalse(attempt.broken)  # QUIT was answered: a clean end (a probe: usable)
        self.assertEqual(attempt.error, "")
        self.assertTrue(primary.sessions[0].tls)
        self.assertEqual(primary.sessions[0].commands[-1], b"QUIT")
        for job in jobs:
            self.assertEqual(set(self.kinds(job).values()), {"delivered"})

    def test_implicit_tls_peer_that_answers_quit_and_hangs(self) -> Any:
        return self.check_tls_quit_then_mute("ssl", [self.job()])

    def test_starttls_peer_that_answers_quit_and_hangs(self) -> Any:
        return self.check_tls_quit_then_mute("starttls", [self.job()])

    def test_probe_of_a_tls_peer_that_answers_quit_and_hangs(self) -> Any:
        return self.check_tls_quit_then_mute("ssl", [])

    def refusing(self, code: int, text: str) -> FakePrimary:
        busy = self.primary(greeting=None)
        busy.protocol = GreetAndStay
        busy.refusal = (code, text)
        busy.greeted = []
        return busy

    @defer.inlineCallbacks
    def test_refused_greeting_is_closed_at_once_without_quit(self) -> Any:
        for code, text in ((421, "4.3.2 busy"), (554, "5.7.1 not you")):
            busy = self.refusing(code, text)
            primary = self.primary()
            job = self.job()
            attempt = yield self.start([busy, primary], [job])  # the Clock never moves
            self.assertTrue(attempt.connected)
            self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
            (greeted,) = busy.greeted
            yield greeted.lost  # the target saw us close
            self.assertEqual(busy.sessions[0].commands, [], code)  # no QUIT
            self.assertEqual(self.timers.clock.seconds(), 0)

    @defer.inlineCallbacks
    def test_refused_greeting_everywhere(self) -> Any:
        busy = self.refusing(421, "4.3.2 busy")
        job = self.job()
        attempt = yield self.start([busy], [job])
        self.assertFalse(attempt.connected)
        self.assertIn("greeting: 421 4.3.2 busy", attempt.error)
        self.assertEqual(self.kinds(job), {"bob@example.com": "tempfail"})
        self.assertEqual(busy.sessions[0].commands, [])

    @defer.inlineCallbacks
    def test_421_to_a_pipelined_rcpt_then_354_gets_no_quit_as_data(self) -> Any:
        """The target refuses one RCPT with 421 (it is closing) yet answers 354 to DATA: a QUIT
        would be read as the message; the client closes at once instead."""
        primary = self.primary(rcpt_replies={"carol@example.com": (421, "4.3.2 closing")})
        primary.protocol = PartialData
        job = self.job(("bob@example.com", "carol@example.com"))
        attempt = yield self.start([primary], [job])  # the Clock never moves
        self.assertTrue(attempt.broken)
        self.assertEqual(attempt.error, "rcpt: 421 4.3.2 closing")
        self.assertEqual(set(self.kinds(job).values()), {"tempfail"})
        yield primary.stop()
        (txn,) = primary.transactions  # DATA was answered with 354...
        self.assertFalse(txn.complete)
        self.assertEqual(txn.raw, b"")  # ...and nothing followed, no QUIT as data
        self.assertNotIn(b"QUIT", primary.sessions[0].commands)

    @defer.inlineCallbacks
    def test_a_local_error_is_flagged_as_such(self) -> Any:
        """An unreadable ca_file fails in the client, before connecting: not the target."""
        primary = self.primary()
        job = self.job()
        missing = str(self.tmp / "gone.pem")
        attempt = yield self.start([primary], [job], security="starttls_required", ca_file=missing)
        self.assertTrue(attempt.local_error)
        self.assertFalse(attempt.connected)
        self.assertTrue(attempt.error.startswith("local: "))
        outcome = self.out(job)["bob@example.com"]
        self.assertEqual(
            (outcome.kind, outcome.tried, outcome.text), ("tempfail", False, attempt.error)
        )
        self.assertEqual(primary.connections, 0)
        self.assertEqual(len(self.flushLoggedErrors(FileNotFoundError)), 1)
