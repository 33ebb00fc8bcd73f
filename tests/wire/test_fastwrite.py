"""write_now: straight to the socket only for a plain TCP connection with nothing buffered."""

from __future__ import annotations

import socket
from typing import Any

from twisted.internet import tcp
from twisted.protocols.policies import ProtocolWrapper, WrappingFactory

from mxbackup.wire.fastwrite import write_now


class _Sock:
    def __init__(self, accept: int) -> None:
        self.accept = accept
        self.sent = b""

    def send(self, data: bytes) -> int:
        n = min(self.accept, len(data))
        self.sent += data[:n]
        return n


def connection(accept: int = 1000, **state: Any) -> tcp.Connection:
    """A tcp.Connection with a scripted socket, its own buffered writes recorded."""
    conn = tcp.Connection.__new__(tcp.Connection)
    conn.socket = _Sock(accept)
    conn.TLS = False
    conn.dataBuffer = b""
    conn._tempDataBuffer = []
    conn.connected = 1
    conn.disconnecting = 0
    for key, value in state.items():
        setattr(conn, key, value)
    conn.written = []
    conn.write = conn.written.append
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
    for state in ({"dataBuffer": b"x"}, {"_tempDataBuffer": [b"x"]}):
        c = connection(**state)
        write_now(c, b"250 ok\r\n")
        assert c.socket.sent == b"" and c.written == [b"250 ok\r\n"]


def test_not_after_starttls_nor_when_closing():
    for state in ({"TLS": True}, {"disconnecting": 1}, {"connected": 0}):
        c = connection(**state)
        write_now(c, b"250 ok\r\n")
        assert c.socket.sent == b"" and c.written == [b"250 ok\r\n"]


def test_not_through_a_wrapping_tls_protocol():
    """A TLS endpoint's protocol wraps the TCP connection and forwards attribute lookups
    (``socket``, ``TLS`` = False) to it: writing to that socket would bypass the encryption."""
    inner = connection()
    wrapper = ProtocolWrapper(WrappingFactory(None), None)
    wrapper.transport = inner
    written: list[bytes] = []
    wrapper.write = written.append
    assert wrapper.socket is inner.socket  # the lookup that would mislead a duck-typed check
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
