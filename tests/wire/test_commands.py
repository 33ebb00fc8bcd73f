"""The command/reply core (mxbackup.wire.commands) on a StringTransport and a Clock."""

from __future__ import annotations

from typing import Any

from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from mxbackup.wire.commands import CommandClient, ProtocolError, Reply, ReplyTimeout


class CoreTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.clock = Clock()
        self.proto = CommandClient(self.clock, 30.0)
        self.transport = StringTransport()
        self.proto.makeConnection(self.transport)

    def replies(self, waits: list[Any]) -> list[Any]:
        out: list[Any] = []
        for d in waits:
            d.addBoth(out.append)
        return out

    def test_commands_go_in_one_write_and_replies_are_matched_in_order(self) -> None:
        got = self.replies(self.proto.send(b"MAIL FROM:<a@b>", b"RCPT TO:<c@d>", b"DATA"))
        self.assertEqual(self.transport.value(), b"MAIL FROM:<a@b>\r\nRCPT TO:<c@d>\r\nDATA\r\n")
        self.proto.dataReceived(b"250 ok\r\n550-5.1.1 no\r\n550 5.1.1 such user\r\n35")
        self.assertEqual(got, [Reply(250, (b"ok",)), Reply(550, (b"5.1.1 no", b"5.1.1 such user"))])
        self.proto.dataReceived(b"4 go\r\n")
        self.assertEqual(got[2], Reply(354, (b"go",)))
        self.assertEqual(got[1].text, "5.1.1 no 5.1.1 such user")

    def test_a_code_alone_is_a_reply(self) -> None:
        got = self.replies([self.proto.expect()])
        self.proto.dataReceived(b"220\r\n")
        self.assertEqual(got, [Reply(220, (b"",))])

    def test_the_timer_runs_only_while_a_reply_is_awaited(self) -> None:
        self.assertEqual(self.clock.getDelayedCalls(), [])
        got = self.replies(self.proto.send(b"NOOP"))
        self.clock.advance(29)
        self.proto.dataReceived(b"250 ok\r\n")
        self.assertEqual(self.clock.getDelayedCalls(), [])  # nothing awaited
        self.clock.advance(1000)
        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(got, [Reply(250, (b"ok",))])

    def test_timeout_fails_what_waits_and_aborts(self) -> None:
        got = self.replies(self.proto.send(b"NOOP", b"NOOP"))
        self.clock.advance(30)
        self.assertTrue(self.transport.disconnected)  # abortConnection
        self.assertEqual(len(got), 2)
        for f in got:
            self.assertIsInstance(f.value, ReplyTimeout)

    def test_writing_keeps_the_timer_going(self) -> None:
        self.proto.writing(True)
        self.clock.advance(20)
        self.proto.write(b"data")
        self.clock.advance(20)
        self.assertFalse(self.transport.disconnecting)
        self.proto.writing(False)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_lost_connection_fails_what_waits_with_its_reason(self) -> None:
        got = self.replies(self.proto.send(b"QUIT"))
        lost = self.replies([self.proto.lost.when()])
        self.proto.connectionLost(Failure(ConnectionDone()))
        self.assertIsInstance(got[0].value, ConnectionDone)
        self.assertIsInstance(lost[0], ConnectionDone)
        later = self.replies(self.proto.send(b"NOOP"))
        self.assertIsInstance(later[0].value, ConnectionDone)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_reply_nobody_asked_for(self) -> None:
        unasked = self.replies([self.proto.unasked.when()])
        self.proto.dataReceived(b"421 4.4.2 idle\r\n")
        self.assertEqual(unasked, [Reply(421, (b"4.4.2 idle",))])

    def test_not_a_reply(self) -> None:
        got = self.replies([self.proto.expect()])
        self.proto.dataReceived(b"hello there\r\n")
        self.assertIsInstance(got[0].value, ProtocolError)
        self.assertTrue(self.transport.disconnected)

    def test_reply_line_too_long(self) -> None:
        got = self.replies([self.proto.expect()])
        self.proto.dataReceived(b"250-" + b"x" * (CommandClient.MAX_LENGTH + 10))
        self.assertIsInstance(got[0].value, ProtocolError)

    def test_tcp_nodelay_is_set(self) -> None:
        """Nagle would hold the final ".\r\n" back until the previous segment is acked."""
        calls: list[bool] = []
        transport = StringTransport()
        transport.setTcpNoDelay = calls.append  # type: ignore[attr-defined]
        CommandClient(self.clock, 30.0).makeConnection(transport)
        self.assertEqual(calls, [True])

    def test_close_is_aborted_after_the_reply_timeout(self) -> None:
        """Over TLS ``loseConnection`` waits for the peer's close_notify: bounded."""
        self.proto.close()
        self.assertTrue(self.transport.disconnecting)
        self.clock.advance(29.9)
        self.assertFalse(self.transport.disconnected)
        self.clock.advance(0.1)
        self.assertTrue(self.transport.disconnected)  # abortConnection

    def test_close_backstop_goes_with_the_connection(self) -> None:
        self.proto.close()
        self.proto.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.clock.getDelayedCalls(), [])
