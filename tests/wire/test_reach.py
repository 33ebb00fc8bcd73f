"""The connect-only check (``wire/reach``) on real 127.0.0.1 sockets: a listening port
connects and is closed at once with nothing written; a closed port does not connect."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, error, protocol, reactor
from twisted.internet.testing import MemoryReactorClock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from wirecase import closed_port

from mxbackup.wire.contract import Candidate
from mxbackup.wire.reach import reachable


class Recorder(protocol.Protocol):
    def connectionMade(self) -> None:
        self.factory.connections += 1

    def dataReceived(self, data: bytes) -> None:
        self.factory.received += data

    def connectionLost(self, reason: Any = None) -> None:
        self.factory.closed.callback(None)


class Listening(protocol.Factory):
    protocol = Recorder

    def __init__(self) -> None:
        self.connections = 0
        self.received = b""
        self.closed: defer.Deferred[None] = defer.Deferred()


class ReachTests(TestCase):
    def listen(self) -> tuple[Listening, int]:
        factory = Listening()
        port = reactor.listenTCP(0, factory, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        return factory, port.getHost().port

    @defer.inlineCallbacks
    def test_a_listening_port_connects_and_is_closed_with_nothing_written(self) -> Any:
        server, port = self.listen()
        connected = yield reachable(reactor, [Candidate("primary.test", "127.0.0.1", port)], 2)
        self.assertIs(connected, True)
        yield server.closed  # we closed it, without a word
        self.assertEqual((server.connections, server.received), (1, b""))

    @defer.inlineCallbacks
    def test_a_closed_port_is_refused(self) -> Any:
        candidates = [Candidate("primary.test", "127.0.0.1", closed_port())]
        connected = yield reachable(reactor, candidates, 2)
        self.assertIs(connected, False)

    @defer.inlineCallbacks
    def test_candidates_in_order_the_first_that_connects_wins(self) -> Any:
        first, port1 = self.listen()
        second, port2 = self.listen()
        candidates = [
            Candidate("a.test", "127.0.0.1", closed_port()),
            Candidate("b.test", "127.0.0.1", port1),
            Candidate("c.test", "127.0.0.1", port2),
        ]
        connected = yield reachable(reactor, candidates, 2)
        self.assertIs(connected, True)
        yield first.closed
        self.assertEqual((first.connections, second.connections), (1, 0))

    @defer.inlineCallbacks
    def test_nothing_to_check(self) -> Any:
        connected = yield reachable(reactor, [], 2)
        self.assertIs(connected, False)

    def test_each_candidate_gets_the_timeout_and_a_timeout_moves_on(self) -> None:
        memory = MemoryReactorClock()
        candidates = [Candidate("a.test", "192.0.2.1", 25), Candidate("b.test", "192.0.2.2", 25)]
        got: list = []
        reachable(memory, candidates, 1.5).addBoth(got.append)
        (host, port, factory, timeout, _bind) = memory.tcpClients[0]
        self.assertEqual((host, port, timeout), ("192.0.2.1", 25, 1.5))
        factory.clientConnectionFailed(None, Failure(error.TimeoutError()))
        self.assertEqual(got, [])
        self.assertEqual(memory.tcpClients[1][:2], ("192.0.2.2", 25))
        memory.tcpClients[1][2].clientConnectionFailed(None, Failure(error.TimeoutError()))
        self.assertEqual(got, [False])
