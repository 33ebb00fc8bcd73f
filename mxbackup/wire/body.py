"""Sending the stored message after a 354: dot-stuffed, then the final ".".

The file is canonical CRLF and goes out as is, or converted to 7 bit on the way
(``sevenbit.Converter``, chunk by chunk, for a target without 8BITMIME).  Up to
``WHOLE_MESSAGE`` octets it is read and sent in one write, end of data included (no producer
to set up and take down for one chunk); a bigger one is streamed by ``BodySender``, a push
producer that writes chunk after chunk through the command core until the transport asks it
to pause (its buffer is full), and goes on when the transport has drained.  Every chunk
counts as progress for the reply timer.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import IO, Any

from twisted.internet import defer, error
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from mxbackup.wire import sevenbit
from mxbackup.wire.commands import CommandClient, Reply
from mxbackup.wire.dotstuff import DotStuffer

WHOLE_MESSAGE = 256 * 1024  # up to this size a message is read and sent in one write
CHUNK = 2**14


@implementer(IPushProducer)
class BodySender:
    """Streams ``file``, dot-stuffed, to ``proto``; ``done`` fires when the end of data is
    written, or fails when the transport stops it (the connection is going away)."""

    def __init__(
        self, file: IO[bytes], proto: CommandClient, plan: sevenbit.Plan | None = None
    ) -> None:
        self.file = file
        self.proto = proto
        self.stuffer = DotStuffer()
        self.converter = sevenbit.Converter(plan) if plan is not None else None
        self.paused = False
        self.done: defer.Deferred[None] = defer.Deferred()

    def start(self) -> defer.Deferred[None]:
        self.proto.writing(True)
        self.done.addBoth(self._ended)
        self.proto.transport.registerProducer(self, True)
        self.resumeProducing()
        return self.done

    def _ended(self, result: Any) -> Any:
        self.proto.writing(False)
        return result

    def resumeProducing(self) -> None:
        self.paused = False
        while not self.paused and not self.done.called:
            chunk = self.file.read(CHUNK)
            if not chunk:
                self.proto.transport.unregisterProducer()
                last = self.converter.end() if self.converter is not None else b""
                self.proto.write(self.stuffer(last) + self.stuffer.end_of_data())
                self.done.callback(None)
                return
            if self.converter is not None:
                chunk = self.converter.feed(chunk)
            self.proto.write(self.stuffer(chunk))

    def pauseProducing(self) -> None:
        self.paused = True

    def stopProducing(self) -> None:
        self.paused = True
        if not self.done.called:
            self.done.errback(error.ConnectionLost("the transport stopped the data"))


def send_body(
    proto: CommandClient, path: str, size: int, plan: sevenbit.Plan | None = None
) -> defer.Deferred[Reply]:
    """The message (converted to 7 bit by ``plan``'s converter, if given) and the end of
    data; the reply to it.  A file that cannot be read aborts the connection (sending the
    final "." would deliver a truncated message).  Up to ``WHOLE_MESSAGE`` octets, no
    generator: one layer less of Deferred machinery for every message sent."""
    final = proto.expect()  # registered first: the timer runs during the transfer
    if size > WHOLE_MESSAGE:
        return _stream(proto, path, plan, final)
    try:
        with open(path, "rb") as f:
            data = f.read()
        if plan is not None:
            converter = sevenbit.Converter(plan)
            data = converter.feed(data) + converter.end()
        stuffer = DotStuffer()
        proto.write(stuffer(data) + stuffer.end_of_data())
    except OSError:
        _unreadable(proto, final)
        return defer.fail()
    except error.ConnectionLost:
        pass  # the connection went away: the reply's failure says why
    return final


@defer.inlineCallbacks
def _stream(
    proto: CommandClient, path: str, plan: sevenbit.Plan | None, final: defer.Deferred[Reply]
) -> Generator[Any, Any, Reply]:
    try:
        with open(path, "rb") as f:  # noqa: SIM117 - the transfer must end inside
            yield BodySender(f, proto, plan).start()
    except OSError:
        _unreadable(proto, final)
        raise
    except error.ConnectionLost:
        pass  # the connection went away: the reply's failure says why
    reply = yield final
    return reply


def _unreadable(proto: CommandClient, final: defer.Deferred[Reply]) -> None:
    final.addErrback(lambda _: None)  # nobody waits for it: the connection is aborted
    proto.abort()


def read_chunks(path: str, size: int = CHUNK * 16) -> Generator[bytes, None, None]:
    """The stored file in chunks (for ``sevenbit.scan``); an OSError is the caller's."""
    with open(path, "rb") as f:
        while chunk := f.read(size):
            yield chunk
