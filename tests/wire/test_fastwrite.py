"""write_now: straight to the socket only for a plain TCP connection with nothing buffered.

It reads none of Twisted's buffers: a transport that once took a remainder through
``transport.write`` (its buffer may hold data) always takes the usual path after."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import ISSLTransport
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory
from zope.interface import directlyProvides

from mxbackup.wire.fastwrite import write_now


class _Sock:
    def __init__(self, accept: int) -> None:
        self.accept = accept
        self.sent = b""

    def send(self, data: bytes) -> int:
        n = min(self.accept, len(data))
        self.sent += data[:n]
        return n


def connection(accept: int = 1000, buffered: bool = False, **state: Any) -> tcp.Connection:
    """A tcp.Connection with a scripted socket (``getHandle()`` returns it), its own buffered
    writes recorded.  ``buffered``: a remainder went through its ``write`` before."""
    conn = tcp.Connection.__new__(tcp.Connection)
    conn.socket = _Sock(accept)
    conn.connected = 1
    conn.disconnecting = 0
    for key, value in state.items():
        setattr(conn, key, value)
    conn.written = []
    conn.write = conn.written.append
    if buffered:
        conn.socket.accept = 1
        write_now(conn, b"xy")  # the socket takes "x", "y" goes to the buffer
        assert conn.written == [b"y"]
        conn.socket.accept, conn.socket.sent, conn.written[:] = accept, b"", []
    return conn


def test_straight_to_the_socket():
    c = connection()
    write_now(c, b"250 ok\r\n")
    assert c.socket.sent == b"250 ok\r\n" and c.written == []


def test_what_the_socket_does_not_take_goes_through_the_transport():
    c = connection(accept=3)
    write_now(c, b"250 ok\r\n")
    assert c.socket.sent == b"250" and c.written == [b" ok\r\n"]


def test_never_overtakes_buffered_data():
    c = connection(buffered=True)
    write_now(c, b"250 ok\r\n")
    assert c.socket.sent == b"" and c.written == [b"250 ok\r\n"]
    write_now(c, b"250 again\r\n")  # and never again: its buffer may not be empty
    assert c.socket.sent == b"" and c.written == [b"250 ok\r\n", b"250 again\r\n"]


def test_a_transport_that_took_everything_stays_on_the_fast_path():
    c = connection()
    for _ in range(3):
        write_now(c, b"250 ok\r\n")
    assert c.socket.sent == b"250 ok\r\n" * 3 and c.written == []


def test_not_after_starttls_nor_when_closing():
    tls = connection()
    directlyProvides(tls, ISSLTransport)  # what startTLS does (pinned in test_twisted_pins)
    for c in (tls, connection(disconnecting=1), connection(connected=0)):
        write_now(c, b"250 ok\r\n")
        assert c.socket.sent == b"" and c.written == [b"250 ok\r\n"]


def test_nothing_is_set_on_the_transport():
    c = connection(accept=3)
    before = set(vars(c))
    write_now(c, b"250 ok\r\n")
    assert set(vars(c)) == before


def test_not_through_a_wrapping_tls_protocol():
    """A TLS endpoint's protocol wraps the TCP connection and forwards attribute lookups
    (``socket``, ``TLS`` = False) to it: writing to that socket would bypass the encryption."""
    inner = connection()
    wrapper = ProtocolWrapper(WrappingFactory(None), None)
    wrapper.transport = inner
    written: list[bytes] = []
    wrapper.write = written.append
    assert wrapper.getHandle() is inner.socket  # the lookup that would mislead a duck-typed check
    write_now(wrapper, b"secret\r\n")
    assert inner.socket.sent == b"" and written == [b"secret\r\n"]


def test_a_real_socket_pair():
    a, b = socket.socketpair()
    try:
        c = connection(socket=a)
        write_now(c, b"220 hello\r\n")
        assert b.recv(100) == b"220 hello\r\n"
    finally:
        a.close()
        b.close()
