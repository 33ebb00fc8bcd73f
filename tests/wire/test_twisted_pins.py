"""The Twisted behaviours the wire layer relies on (public API only), each pinned on real
127.0.0.1 sockets so an upgrade that changes one fails here first.

- ``fastwrite``: a TCP transport's ``getHandle()`` is its socket; after ``startTLS`` it provides
  ``ISSLTransport`` (so it never gets plain-text writes to its socket).
- ``body.BodySender``: ``transport.write`` pauses a registered streaming producer at once when
  the buffer is over ``bufferSize``, resumes it when drained, and stops it before the protocol
  hears ``connectionLost`` (whose reason then says why the data did not go).
- ``session``: a certificate that fails verification reaches the protocol's ``connectionLost``
  as the TLS error (``test_client_tls`` asserts the resulting texts).
"""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import defer, protocol, reactor, ssl
from twisted.internet.error import ConnectionAborted
from twisted.internet.interfaces import IPushProducer, ISSLTransport
from twisted.trial.unittest import TestCase
from zope.interface import implementer


class _Server(protocol.Protocol):
    def connectionMade(self) -> None:
        self.factory.connected.append(self)
        if self.factory.stall:
            self.transport.pauseProducing()  # read nothing: the client's buffer fills

    def dataReceived(self, data: bytes) -> None:
        self.factory.received += data


class _Client(protocol.Protocol):
    def connectionMade(self) -> None:
        self.factory.made.callback(self)

    def connectionLost(self, reason: Any) -> None:
        self.factory.events.append(("connectionLost", reason.type))
        self.factory.lost.callback(None)


@implementer(IPushProducer)
class _Producer:
    def __init__(self, events: list) -> None:
        self.events = events
        self.resumed: defer.Deferred[None] = defer.Deferred()

    def pauseProducing(self) -> None:
        self.events.append("pause")

    def resumeProducing(self) -> None:
        self.events.append("resume")
        if not self.resumed.called:
            self.resumed.callback(None)

    def stopProducing(self) -> None:
        self.events.append("stop")


class PinTests(TestCase):
    timeout = 20

    @defer.inlineCallbacks
    def connect(self, stall: bool = False) -> Any:
        server = protocol.ServerFactory()
        server.protocol = _Server
        server.connected, server.received, server.stall = [], b"", stall
        port = reactor.listenTCP(0, server, interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        client = protocol.ClientFactory()
        client.protocol = _Client
        client.made, client.lost, client.events = defer.Deferred(), defer.Deferred(), []
        reactor.connectTCP("127.0.0.1", port.getHost().port, client)
        proto = yield client.made
        self.server, self.client = server, client

        def close() -> Any:
            proto.transport.abortConnection()
            for s in server.connected:
                s.transport.abortConnection()
            return client.lost

        self.addCleanup(close)
        return proto

    @defer.inlineCallbacks
    def test_get_handle_is_the_socket_and_start_tls_provides_issltransport(self) -> Any:
        proto = yield self.connect()
        self.assertIsInstance(proto.transport.getHandle(), socket.socket)
        self.assertFalse(ISSLTransport.providedBy(proto.transport))
        proto.transport.startTLS(ssl.CertificateOptions(verify=False))
        self.assertTrue(ISSLTransport.providedBy(proto.transport))

    @defer.inlineCallbacks
    def test_a_streaming_producer_is_paused_by_write_and_stopped_before_connection_lost(
        self,
    ) -> Any:
        proto = yield self.connect(stall=True)
        events = self.client.events
        proto.transport.registerProducer(_Producer(events), True)
        chunk = b"x" * 65536
        for _ in range(200):  # more than the kernel's buffers: the transport's fills
            proto.transport.write(chunk)
            if "pause" in events:
                break
        self.assertIn("pause", events)  # synchronously, inside write
        proto.transport.abortConnection()
        yield self.client.lost
        self.assertEqual(events[-2:], ["stop", ("connectionLost", ConnectionAborted)])

    @defer.inlineCallbacks
    def test_a_paused_producer_is_resumed_when_the_buffer_drains(self) -> Any:
        proto = yield self.connect(stall=True)
        events = self.client.events
        producer = _Producer(events)
        proto.transport.registerProducer(producer, True)
        while "pause" not in events:
            proto.transport.write(b"x" * 65536)
        for s in self.server.connected:
            s.transport.resumeProducing()  # the peer reads again
        yield producer.resumed  # the transport drained its buffer and said so
        self.assertEqual(events[-1], "resume")
