"""The SMTP client's command/reply core: commands out, replies matched to them in order.

A ``LineReceiver`` that knows nothing of mail: ``send(*lines)`` writes the command lines in one
write (so a PIPELINING group goes out as one packet) and gives one Deferred per line, firing
with its ``Reply``; replies (multi-line ones joined) are handed to the oldest waiting command,
as RFC 2920 says they come.  ``expect()`` waits for a reply no command asked for yet (the
greeting, the reply to the end of the data).  One reply timer, on the injected clock, runs while
a reply is awaited or data is being written; when it fires every waiting command fails with
``ReplyTimeout`` and the connection is aborted (a stalled target never reads our output, so
``loseConnection`` would wait for ever).  ``close`` is bounded the same way: a connection
still there a reply timeout after it is aborted.  When the connection goes, every waiting
command fails with its reason (a TLS layer hands its own: a failed certificate check...).

A reply that arrives while nothing waits (an idle 421...) goes to ``when_unasked()``.

The delivery session (``mxbackup.wire.session``, ``mxbackup.wire.client``) is driven on top of
it with ``inlineCallbacks``; recipient callouts can use it the same way (MAIL, RCPT, RSET).
All output goes through ``write_now`` (see ``mxbackup.wire.fastwrite``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.protocols import basic
from twisted.python.failure import Failure

from mxbackup.wire.fastwrite import write_now


@dataclass(frozen=True)
class Reply:
    code: int
    lines: tuple[bytes, ...]  # the text of each line, after the code and its separator

    @property
    def ok(self) -> bool:
        return 200 <= self.code < 300

    @property
    def text(self) -> str:
        """The lines as one line of text, runs of white space made one space."""
        return " ".join(b" ".join(self.lines).decode("utf-8", "replace").split())


class ReplyError(Exception):
    """A reply that ends the step it answers (a refusal, a 421...)."""

    def __init__(self, reply: Reply) -> None:
        super().__init__(f"{reply.code} {reply.text}")
        self.reply = reply


class ReplyTimeout(Exception):
    """No reply (or no progress writing) within the reply timeout."""


class ProtocolError(Exception):
    """The peer sent something that is not an SMTP reply."""


class Observers:
    """Deferreds handed out before an event, all fired with it (and any handed out after)."""

    def __init__(self) -> None:
        self._waiting: list[defer.Deferred[Any]] = []
        self._result: tuple[Any] | None = None

    def when(self) -> defer.Deferred[Any]:
        if self._result is not None:
            return defer.succeed(self._result[0])
        d: defer.Deferred[Any] = defer.Deferred()
        self._waiting.append(d)
        return d

    def fire(self, result: Any) -> None:
        if self._result is not None:
            return
        self._result = (result,)
        waiting, self._waiting = self._waiting, []
        for d in waiting:
            d.callback(result)


class CommandClient(basic.LineReceiver):
    delimiter = b"\r\n"
    MAX_LENGTH = 64 * 1024  # a longer reply line ends the session

    def __init__(self, clock: Any, timeout: float) -> None:
        self.clock = clock
        self.timeout = timeout
        self.alive = False  # connected, and not being closed by us
        self._waiting: deque[defer.Deferred[Reply]] = deque()
        self._lines: list[bytes] = []
        self._timer: Any = None
        self._closing: Any = None  # the backstop of ``close``
        self._writing = 0  # data transfers in progress (they keep the timer running)
        self._lost_reason: Failure | None = None
        self.made = Observers()
        self.lost = Observers()  # fired with the exception the connection ended with
        self.unasked = Observers()  # fired with the first reply nothing waited for

    # -- the connection ----------------------------------------------------------------------
    def connectionMade(self) -> None:
        self.alive = True
        for transport in (self.transport, getattr(self.transport, "transport", None)):
            try:
                transport.setTcpNoDelay(True)  # Nagle would delay the final ".\r\n"
                break
            except Exception:  # noqa: BLE001, S112 - TLS wrappers, test transports
                continue
        self.made.fire(self)

    def connectionLost(self, reason: Failure) -> None:  # type: ignore[override]
        self.alive = False
        self._lost_reason = reason
        self._stop_timer()
        if self._closing is not None:
            if self._closing.active():
                self._closing.cancel()
            self._closing = None
        self._fail_waiting(reason)
        self.lost.fire(reason.value)

    def close(self) -> None:
        """End the connection once our output is sent.  Over TLS that waits for the peer's
        close_notify, which a peer that neither reads nor closes never sends: after the reply
        timeout the connection is aborted (Twisted's reply timer stayed armed until then)."""
        self.alive = False
        if self._closing is None:
            self._closing = self.clock.callLater(self.timeout, self._close_timed_out)
        self.transport.loseConnection()

    def _close_timed_out(self) -> None:
        self._closing = None
        self.transport.abortConnection()

    def abort(self) -> None:
        """End the connection now, whatever is unsent."""
        self.alive = False
        self.transport.abortConnection()

    @property
    def awaiting(self) -> int:
        """How many replies are still due (to commands sent, or expected)."""
        return len(self._waiting)

    # -- commands and replies ----------------------------------------------------------------
    def send(self, *lines: bytes) -> list[defer.Deferred[Reply]]:
        """Write the command lines at once; one Deferred per line, for its reply."""
        waits = [self.expect() for _ in lines]
        if self.alive:
            write_now(self.transport, b"".join(line + b"\r\n" for line in lines))
        return waits

    def expect(self) -> defer.Deferred[Reply]:
        """A Deferred for the next reply no command waits for yet."""
        if not self.alive:
            return defer.fail(self._lost_reason or ConnectionError("not connected"))
        d: defer.Deferred[Reply] = defer.Deferred()
        self._waiting.append(d)
        self._touch()
        return d

    def write(self, data: bytes) -> None:
        """Raw data (the message): every write counts as progress for the reply timer."""
        if self.alive:
            self._touch()
            write_now(self.transport, data)

    def writing(self, on: bool) -> None:
        """A data transfer starts (``True``) or ends: the timer runs meanwhile."""
        self._writing += 1 if on else -1
        self._touch()

    def lineReceived(self, line: bytes) -> None:
        code, sep = line[:3], line[3:4]
        if len(code) != 3 or not code.isdigit() or sep not in (b"-", b" ", b""):
            self._broken(ProtocolError(f"not an SMTP reply: {line[:80]!r}"))
            return
        self._lines.append(line[4:])
        if sep == b"-":
            self._touch()
            return
        reply = Reply(int(code), tuple(self._lines))
        self._lines = []
        if not self._waiting:
            self.unasked.fire(reply)
            return
        d = self._waiting.popleft()
        self._touch()
        d.callback(reply)

    def lineLengthExceeded(self, line: bytes) -> None:
        self._broken(ProtocolError("reply line too long"))

    # -- the reply timer ---------------------------------------------------------------------
    def _touch(self) -> None:
        """Restart the timer if anything is awaited, stop it if not."""
        if not (self._waiting or self._writing) or not self.alive:
            self._stop_timer()
        elif self._timer is None:
            self._timer = self.clock.callLater(self.timeout, self._timed_out)
        else:
            self._timer.reset(self.timeout)

    def _stop_timer(self) -> None:
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None

    def _timed_out(self) -> None:
        self._timer = None
        self._broken(ReplyTimeout())

    def _broken(self, exc: Exception) -> None:
        """The session cannot go on: abort, and fail what waits with ``exc`` (the cause)."""
        if self.alive:
            self.abort()
        self._stop_timer()
        self._fail_waiting(Failure(exc))

    def _fail_waiting(self, reason: Failure) -> None:
        waiting, self._waiting = self._waiting, deque()
        for d in waiting:
            d.errback(reason)
