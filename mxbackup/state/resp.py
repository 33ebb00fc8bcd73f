"""A small Redis client protocol (RESP2) on Twisted: commands out as arrays of bulk strings,
replies parsed incrementally and matched in order to the Deferreds of the commands (so commands
pipeline for free).  Only what the state store needs: no pub/sub, no MULTI.

Why not a library: ``txredisapi`` is the maintained Twisted client, but its connections queue
commands while the server is down and fire them when it comes back, with no per-command
deadline and its own reconnect timers on the global reactor; the state store must answer
``StoreUnavailable`` at once when Redis is down and run on an injected reactor.  What we need
of RESP is about a hundred lines, so we keep them here.
"""

from __future__ import annotations

from collections import deque

from twisted.internet import defer
from twisted.internet.protocol import Protocol
from twisted.python.failure import Failure

from mxbackup.state.base import StoreUnavailable


class RedisError(StoreUnavailable):
    """The server answered a command with an error reply."""


class _Incomplete(Exception):
    pass


def encode(*args: bytes | str | int) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        parts.append(b"$%d\r\n%s\r\n" % (len(arg), arg))
    return b"".join(parts)


_SIMPLE = {
    b"+": lambda line: line,
    b"-": lambda line: RedisError(line.decode("utf-8", "replace")),
    b":": int,
}


def parse(buf: bytes, pos: int = 0) -> tuple[object, int]:
    """One reply from ``buf`` at ``pos`` and the position after it; ``_Incomplete`` when the
    buffer ends first.  An error reply is returned as a ``RedisError`` value."""
    end = buf.find(b"\r\n", pos)
    if end < 0:
        raise _Incomplete()
    kind, line = buf[pos : pos + 1], buf[pos + 1 : end]
    pos = end + 2
    if kind in _SIMPLE:
        return _SIMPLE[kind](line), pos
    if kind not in (b"$", b"*"):
        raise ValueError(f"not a RESP reply: {kind + line!r}")
    n = int(line)
    if n < 0:
        return None, pos
    if kind == b"$":
        if len(buf) < pos + n + 2:
            raise _Incomplete()
        return buf[pos : pos + n], pos + n + 2
    items = []
    for _ in range(n):
        item, pos = parse(buf, pos)
        items.append(item)
    return items, pos


class RedisProtocol(Protocol):
    def __init__(self) -> None:
        self._buf = b""
        self._waiting: deque[defer.Deferred] = deque()
        self.connected_ = False
        self.lost: defer.Deferred = defer.Deferred()

    def connectionMade(self) -> None:
        self.connected_ = True

    def command(self, *args: bytes | str | int) -> defer.Deferred:
        if not self.connected_:
            return defer.fail(StoreUnavailable("not connected to redis"))
        d: defer.Deferred = defer.Deferred()
        self._waiting.append(d)
        self.transport.write(encode(*args))
        return d

    def dataReceived(self, data: bytes) -> None:
        self._buf += data
        pos = 0
        while pos < len(self._buf):
            try:
                reply, pos_after = parse(self._buf, pos)
            except _Incomplete:
                break
            except ValueError as e:
                self._buf = b""
                self._fail_all(StoreUnavailable(str(e)))
                self.transport.abortConnection()
                return
            pos = pos_after
            if not self._waiting:
                continue  # a reply nobody asked for: ignore it
            d = self._waiting.popleft()
            if isinstance(reply, RedisError):
                d.errback(reply)
            else:
                d.callback(reply)
        self._buf = self._buf[pos:]

    def _fail_all(self, error: Exception) -> None:
        waiting, self._waiting = self._waiting, deque()
        for d in waiting:
            d.errback(Failure(error))

    def connectionLost(self, reason: Failure = None) -> None:
        self.connected_ = False
        self._fail_all(StoreUnavailable(f"redis connection lost: {reason.getErrorMessage()}"))
        if not self.lost.called:
            self.lost.callback(None)
