"""Inbound ESMTP: the connection, its byte stream, the command dispatch and the replies.

``SMTPServer`` is a plain ``twisted.internet.protocol.Protocol`` (plus ``TimeoutMixin`` for the
idle timer, whose ``callLater`` is set to the injected clock's).  Twisted's ``ESMTP`` gets
too much wrong for us to keep anything of it (``shared/reference/twisted-mail-pitfalls.md``;
each point has a regression test under ``tests/inbound``):

- pipelining: commands run strictly one after another; while one waits (the commit, a
  password check, an asynchronous RCPT link) the rest stay buffered and reading pauses past
  ``BUSY_BUFFER``, so replies keep their order and ``.`` + ``QUIT`` in one packet gets its
  250 before the 221 (pitfall 2);
- lines: 512 octets a command (1012 for MAIL and RCPT), 12288 a SASL response, bounded
  buffers; an over-long line is skipped to its end, never read as commands (pitfall 5);
- the idle timer counts from the last complete line (pitfall 9), a close that does not finish
  within ``CLOSE_GRACE`` is aborted, ``HARD_ERROR_LIMIT`` errors end the session.

The commands are its collaborators' (``basic``, ``mailrcpt``, ``message``, ``chunking``,
``starttls``, ``sasl``, ``etrn``; ``command_table`` maps the verbs to them); they see it as a
``session.Session`` and never import this module.  MAIL and RCPT ask ``validateFrom`` and
``validateTo``, the seam where policy is plugged in (``space`` and the ``rcpt`` chain).  It
knows nothing of delivery, nor of the factory beyond ``session.FactoryView``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import interfaces, protocol
from twisted.internet.defer import Deferred
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure
from zope.interface import implementer

from mxbackup import replies
from mxbackup.inbound import space
from mxbackup.inbound.address import Mailbox
from mxbackup.inbound.basic import BasicCommands
from mxbackup.inbound.chunking import Chunking
from mxbackup.inbound.etrn import Etrn
from mxbackup.inbound.lines import LineReader
from mxbackup.inbound.mailrcpt import MailRcpt
from mxbackup.inbound.message import MessageIntake
from mxbackup.inbound.rcpt.decision import ACCEPT, Candidate, Decision, Postpone
from mxbackup.inbound.sasl import Sasl
from mxbackup.inbound.session import FactoryView, OnLine, Result, Stream
from mxbackup.inbound.starttls import StartTLS
from mxbackup.inbound.transaction import Transaction
from mxbackup.queue.envelope import Recipient
from mxbackup.replies import Reply
from mxbackup.wire.fastwrite import write_now

if TYPE_CHECKING:
    from mxbackup.inbound.policy import Policy

log = Logger(namespace="mxbackup.smtp_in")

MAX_COMMAND_LINE = 512  # octets including CRLF (RFC 5321 4.5.3.1.4)
# MAIL and RCPT may be longer: DSN adds up to 500 octets (RFC 3461 5), AUTH= 500 (RFC 4954 5).
MAX_PARAMETER_LINE = MAX_COMMAND_LINE + 500
_LONG_OK = frozenset({"MAIL", "RCPT"})
CLOSE_GRACE = 10.0  # seconds a closing connection may take to flush before it is aborted
HARD_ERROR_LIMIT = 20  # like Postfix's smtpd_hard_error_limit
BUSY_BUFFER = 64 * 1024  # octets read ahead while a command waits, before reading pauses
_EIGHT_BIT_OK = frozenset({"MAIL", "RCPT"})  # they answer a UTF-8 address with 553 5.6.7


def command_table(session: SMTPServer) -> dict[str, Callable[[str], Any]]:
    """Every verb the session knows, and whose it is."""
    return {
        **session.basic.verbs(),
        "MAIL": session.mailrcpt.mail,
        "RCPT": session.mailrcpt.rcpt,
        "DATA": session.message.data,
        "BDAT": session.chunking.bdat,
        "STARTTLS": session.starttls.command,
        "AUTH": session.sasl.command,
        "ETRN": session.etrn.command,
    }


@implementer(interfaces.IPushProducer)
class SMTPServer(protocol.Protocol, TimeoutMixin):
    def __init__(self, factory: FactoryView) -> None:
        self.factory = factory
        self.callLater = factory.clock.callLater  # TimeoutMixin's clock
        self.client_ip = ""
        self.helo: str | None = None  # the HELO/EHLO argument, forgotten after STARTTLS
        self.tls = False
        self.can_start_tls = False
        self.authenticated = False
        self.auth_user: str | None = None
        self._transaction: Transaction | None = None  # from MAIL until the end of data / RSET
        self._buffer = b""
        self._line_reader = LineReader(MAX_PARAMETER_LINE)
        self.read_commands()
        self._stream: Stream | None = None  # DATA
        self._busy = False  # a command is waiting for an asynchronous result
        self._output_paused = False
        self._reading_paused = False
        self._closing = False
        self._errors = 0
        self._counted = False
        self._abort_call: Any = None
        self.basic = BasicCommands(self)
        self.mailrcpt = MailRcpt(self)
        self.message = MessageIntake(self)
        self.chunking = Chunking(self)
        self.starttls = StartTLS(self)
        self.sasl = Sasl(self)
        self.etrn = Etrn(self)
        self._verbs = command_table(self)

    @property
    def transaction(self) -> Transaction | None:
        return self._transaction

    @transaction.setter
    def transaction(self, value: Transaction | None) -> None:
        """The transaction ends (RSET, EHLO, STARTTLS, MAIL, end of data): a BDAT message it
        left open is removed now, its spilled file too, not at the next BDAT."""
        if self._transaction is not None and value is not self._transaction:
            self.chunking.ended(self._transaction)
        self._transaction = value

    @property
    def policy(self) -> Policy:
        """Read at every use, so a reload applies to connected clients too."""
        return self.factory.policy

    # -- the seam: policy decides MAIL and RCPT --------------------------------------------
    def validateFrom(self, transaction: Transaction) -> Decision | Deferred[Decision]:
        """May ``transaction`` (its sender and MAIL parameters) begin?"""
        room = space.room_for(self.factory.spool, self.policy.server, transaction.params)
        if room is not ACCEPT:
            return room
        return self.policy.checks.at_mail(transaction)

    def validateTo(self, mailbox: Mailbox) -> Recipient | Reply | Postpone | Deferred[Any]:
        """The RCPT chain's answer for ``mailbox``: the queue's ``Recipient`` when accepted."""
        policy = self.policy
        candidate = Candidate(mailbox, policy.routes.lookup(mailbox.domain))
        assert self.transaction is not None
        result = policy.rcpt_chain.decide(self.transaction, candidate)
        if isinstance(result, Deferred):
            return result.addCallback(candidate.outcome)
        return candidate.outcome(result)

    # -- connection ----------------------------------------------------------------------
    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.client_ip = getattr(peer, "host", str(peer))
        self.factory.opened(self.client_ip)
        self._counted = True
        self.can_start_tls = (
            interfaces.ITLSTransport.providedBy(self.transport)
            and self.factory.tls_context is not None
        )
        self.transport.registerProducer(self, True)
        self.policy.checks.connected(self.client_ip)
        self.reply(replies.GREETING.format(self.policy.server.hostname))
        self.setTimeout(self.policy.server.idle_timeout)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.setTimeout(None)
        self._closing = True
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        self._drop_stream()
        self.chunking.drop()
        if self._counted:
            self._counted = False
            self.factory.closed(self.client_ip)

    def timeoutConnection(self) -> None:
        log.info("idle timeout client={ip}", ip=self.client_ip)
        if self._output_paused:
            # It does not read what we send: a 421 would never reach it, and waiting for
            # the close to flush would keep its slot for CLOSE_GRACE more seconds.
            self._closing = True
            self.transport.abortConnection()
            return
        self.close_with(replies.IDLE_TIMEOUT)

    def close_with(self, reply: Reply) -> None:
        """Send ``reply``, read nothing more, close after it is sent (abort if that hangs: a
        client stuck in a TLS handshake or not reading must not keep its slot)."""
        self.reply(reply)
        self._closing = True
        self._buffer = b""
        self._drop_stream()
        self.transport.loseConnection()
        if self._abort_call is None:
            self._abort_call = self.callLater(CLOSE_GRACE, self._abort)

    def _abort(self) -> None:
        log.info("aborting connection that did not close client={ip}", ip=self.client_ip)
        self.transport.abortConnection()

    def _drop_stream(self) -> None:
        if self._stream is not None:
            self._stream.abort()
            self._stream = None

    # IPushProducer: the transport tells us when the client stops reading our replies.
    def pauseProducing(self) -> None:
        self._output_paused = True
        self._update_reading()

    def resumeProducing(self) -> None:
        self._output_paused = False
        self._update_reading()
        self._pump()

    def stopProducing(self) -> None:
        self._closing = True

    def _update_reading(self) -> None:
        # While a command waits, what the client pipelines behind it stays in the buffer;
        # reading stops only when that grows past BUSY_BUFFER, so a quiet client costs no
        # pause/resume system calls.
        busy_full = self._busy and len(self._buffer) > BUSY_BUFFER
        want_pause = (busy_full or self._output_paused) and not self._closing
        if want_pause != self._reading_paused:
            self._reading_paused = want_pause
            if want_pause:
                self.transport.pauseProducing()
            else:
                self.transport.resumeProducing()

    # -- the byte stream -------------------------------------------------------------------
    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        # The idle timeout counts from the last complete line, not the last byte (Postfix's
        # per-record deadline): a client trickling bytes of a line that never ends does not
        # hold its connection slot forever.
        if b"\n" in data:
            self.resetTimeout()
        self._buffer += data
        if self._busy:
            self._update_reading()
        self._pump()

    def _pump(self) -> None:
        while self._buffer and not (self._busy or self._closing or self._output_paused):
            if not (self._next_block() if self._stream is not None else self._next_line()):
                break
        self._update_reading()

    def _next_block(self) -> bool:
        stream = self._stream
        assert stream is not None
        used, done = stream.feed(self._buffer)
        self._buffer = self._buffer[used:]
        if done:
            self._stream = None
            self.wait(stream.end())
        return done

    def _next_line(self) -> bool:
        used, line, too_long = self._line_reader.cut(self._buffer)
        self._buffer = self._buffer[used:]
        if too_long:
            self._too_long()
        elif line is not None:
            self.wait(self._on_line(line))
        return used > 0

    def read_lines(self, limit: int, on_line: OnLine, too_long: Callable[[], None]) -> None:
        """Hand the following lines (up to ``limit`` octets with CRLF) to ``on_line``."""
        self._line_reader.limit = limit  # (a skip in progress goes on: same reader)
        self._on_line, self._too_long = on_line, too_long

    def read_commands(self) -> None:
        self.read_lines(MAX_PARAMETER_LINE, self._command, self._command_too_long)

    def _command_too_long(self) -> None:
        self.error(replies.LINE_TOO_LONG)

    def read_stream(self, stream: Stream) -> None:
        """Hand the input to ``stream`` until it reports its end (DATA, a BDAT chunk)."""
        self._stream = stream

    def discard_input(self) -> None:
        """Forget what the client has sent and we have not read (STARTTLS: it was plain text)."""
        self._buffer = b""

    def _command(self, line: bytes) -> Result:
        if b"\r" in line or b"\0" in line:
            self.error(replies.BARE_NEWLINE_COMMAND)
            return None
        # Undecodable octets survive as surrogates, so MAIL and RCPT can answer a UTF-8 address
        # with 553 5.6.7 (no SMTPUTF8); any other command with non-ASCII is refused here.
        text = line.decode("utf-8", "surrogateescape")
        verb, _, arg = text.strip(" ").partition(" ")
        verb = verb.upper()
        handler = self._verbs.get(verb)
        if handler is None:
            self.error(replies.UNRECOGNIZED)
        elif not text.isascii() and verb not in _EIGHT_BIT_OK:
            self.error(replies.BAD_8BIT_COMMAND)
        elif len(line) > MAX_COMMAND_LINE - 2 and verb not in _LONG_OK:
            self.error(replies.LINE_TOO_LONG)
        else:
            return handler(arg.strip(" "))
        return None

    def wait(self, result: Result) -> None:
        """Hold the command stream until ``result`` (if any) has sent its reply."""
        if result is None:
            return
        self._busy = True
        self._update_reading()
        result.addErrback(self._internal_error)
        result.addBoth(self._resume)

    def _resume(self, _: object) -> None:
        self._busy = False
        self._update_reading()
        self._pump()

    def _internal_error(self, failure: Failure) -> None:
        log.failure("internal error client={ip}", failure, ip=self.client_ip)
        self.reply(replies.LOCAL_ERROR)

    # -- replies -------------------------------------------------------------------------
    def reply(self, reply: Reply) -> None:
        """One reply line, straight to the socket when nothing is buffered (``fastwrite``)."""
        write_now(
            self.transport, b"%d %s\r\n" % (reply.code, reply.message.encode("utf-8", "replace"))
        )

    def send_lines(self, code: int, lines: list[str]) -> None:
        """A multi-line reply, all its lines in one write."""
        head = b"%03d-" % code
        data = [head + line.encode("utf-8", "replace") + b"\r\n" for line in lines[:-1]]
        data.append(b"%03d %s\r\n" % (code, lines[-1].encode("utf-8", "replace")))
        write_now(self.transport, b"".join(data))

    def error(self, reply: Reply) -> None:
        """A reply to something the client got wrong; too many of them end the session."""
        self.reply(reply)
        self._errors += 1
        if self._errors >= HARD_ERROR_LIMIT:
            log.info("too many errors client={ip}", ip=self.client_ip)
            self.close_with(replies.TOO_MANY_ERRORS)

    def clear_errors(self) -> None:
        """Like Postfix: errors count until mail is accepted."""
        self._errors = 0
