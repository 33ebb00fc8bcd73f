"""Inbound ESMTP: who may hand us mail for which address, and the 250 that means "queued".

``SMTPServer`` subclasses ``twisted.mail.smtp.ESMTP`` and keeps its hooks (``validateFrom``,
``validateTo``, ``sendCode``, ``authenticated``, the idle ``TimeoutMixin``), but owns the
byte stream and the command dispatch, because Twisted's own get these wrong (see
``shared/reference/twisted-mail-pitfalls.md``; each point below has a regression test in
``tests/test_smtp_in.py``):

- pipelining: commands run strictly one after another; while one waits (the commit, a
  password check) the rest stay buffered and reading pauses, so replies keep their order and
  ``.`` + ``QUIT`` in one packet gets its 250 before the 221 (pitfall 2);
- STARTTLS: anything pipelined after it is discarded and the session is reset (pitfall 3);
- AUTH PLAIN/LOGIN only over TLS and only when accounts exist; bad input gets 501 (pitfall 4);
- lines: 512 octets a command, 1000 a text line, bounded buffers (pitfall 5); bare CR/LF in
  the body refused, only ``<CRLF>.<CRLF>`` ends DATA (pitfall 6; see ``datastream``);
- SIZE, 8BITMIME, PIPELINING, ENHANCEDSTATUSCODES, NOOP, VRFY, HELP (pitfall 7);
- addresses parsed strictly, routing tricks refused (pitfall 8; see ``address``);
- one spool file per transaction, local failures 451/452, never 550 (pitfalls 1, 10).

It knows nothing of delivery: its only links are the spool and an injected ``wakeup``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import format_datetime
from typing import Any, Protocol

from twisted.internet import defer, interfaces, protocol
from twisted.logger import Logger
from twisted.mail import smtp
from twisted.python.failure import Failure
from zope.interface import implementer

from mxbackup import replies
from mxbackup.config import Config
from mxbackup.inbound.access import AccessMatrix
from mxbackup.inbound.address import (
    Mailbox,
    PathError,
    parse_params,
    parse_path,
    split_command_argument,
)
from mxbackup.inbound.datastream import DataReader
from mxbackup.names import DomainError, parse_domain
from mxbackup.queue.envelope import Envelope, Recipient
from mxbackup.queue.spool import Incoming, Spool, is_out_of_space
from mxbackup.replies import Reply
from mxbackup.routes import RouteTable
from mxbackup.stats import Stats
from mxbackup.wire.fastwrite import write_now

log = Logger(namespace="mxbackup.smtp_in")

MAX_COMMAND_LINE = 512  # octets including CRLF (RFC 5321 4.5.3.1.4)
MAX_AUTH_LINE = 12288  # octets of one SASL response line (RFC 4954 4)
CLOSE_GRACE = 10.0  # seconds a closing connection may take to flush before it is aborted
HARD_ERROR_LIMIT = 20  # like Postfix's smtpd_hard_error_limit
BUSY_BUFFER = 64 * 1024  # octets read ahead while a command waits, before reading pauses
_HELO_UNSAFE = re.compile(r"[^!-~]|[()\\]")

PasswordCheck = Callable[[str, str], defer.Deferred]


class QueueFlusher(Protocol):
    """What ETRN needs of the queue (the scheduler provides it; injected, not imported)."""

    def keys_for_domain(self, domain: str) -> list[str]: ...

    def flush(self, key: str | None = None) -> int: ...


class Policy:
    """What the server needs from the configuration, prepared once (and replaced on reload)."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.server = config.server
        self.routes = RouteTable(config.routes)
        self.access = AccessMatrix(config.ip_ranges)
        self.accounts = {a.username: a.password_hash for a in config.accounts}


class SMTPFactory(smtp.SMTPFactory):
    """Builds one ``SMTPServer`` per connection and enforces the connection limits."""

    def __init__(
        self,
        config: Config,
        spool: Spool,
        clock: interfaces.IReactorTime,
        check_password: PasswordCheck,
        tls_context: Any = None,
        wakeup: Callable[[Envelope], None] = lambda envelope: None,
        stats: Stats | None = None,
        etrn: QueueFlusher | None = None,
    ) -> None:
        super().__init__()
        self.policy = Policy(config)
        self.spool = spool
        self.clock = clock
        self.check_password = check_password
        self.tls_context = tls_context
        self.wakeup = wakeup
        self.stats = stats or Stats()
        self.etrn = etrn
        self.connections = 0
        self.per_ip: Counter[str] = Counter()

    def reconfigure(self, config: Config) -> None:
        self.policy = Policy(config)

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        server = self.policy.server
        ip = getattr(addr, "host", str(addr))
        if self.connections >= server.max_connections:
            log.info("refused connection client={ip}: too many connections", ip=ip)
            return _Refuse(replies.TOO_MANY_CONNECTIONS)
        if self.per_ip[ip] >= server.max_connections_per_ip:
            log.info("refused connection client={ip}: too many from this address", ip=ip)
            return _Refuse(replies.TOO_MANY_FROM_IP)
        p = SMTPServer(self)
        p.factory = self
        return p


class _Refuse(protocol.Protocol):
    def __init__(self, reply: Reply) -> None:
        self.reply = reply

    def connectionMade(self) -> None:
        self.transport.write(self.reply.line() + b"\r\n")
        self.transport.loseConnection()


@implementer(interfaces.IPushProducer)
class SMTPServer(smtp.ESMTP):
    def __init__(self, factory: SMTPFactory) -> None:
        super().__init__(chal={}, contextFactory=factory.tls_context)
        self.factory = factory
        self.host = self.policy.server.hostname
        self.timeout = self.policy.server.idle_timeout
        self.callLater = factory.clock.callLater
        self.client_ip = ""
        self.auth_user: str | None = None
        self._buffer = b""
        self._mode = "command"  # command | data | auth | skip
        self._busy = False  # a command is waiting for an asynchronous result
        self._output_paused = False
        self._reading_paused = False
        self._closing = False
        self._errors = 0
        self._counted = False
        self._auth: _AuthExchange | None = None
        self._abort_call: Any = None
        self._reset_transaction()

    @property
    def policy(self) -> Policy:
        """Read at every use, so a reload applies to connected clients too."""
        return self.factory.policy

    # -- connection ----------------------------------------------------------------------
    def connectionMade(self) -> None:
        peer = self.transport.getPeer()
        self.client_ip = getattr(peer, "host", str(peer))
        self._helo = (None, self.client_ip.encode())
        self.factory.connections += 1
        self.factory.per_ip[self.client_ip] += 1
        self._counted = True
        self.canStartTLS = (
            interfaces.ITLSTransport.providedBy(self.transport) and self.ctx is not None
        )
        self.transport.registerProducer(self, True)
        self._reply(replies.GREETING.format(self.policy.server.hostname))
        self.setTimeout(self.timeout)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self.setTimeout(None)
        self._closing = True
        if self._abort_call is not None and self._abort_call.active():
            self._abort_call.cancel()
        if self._incoming is not None and self._mode == "data":
            self._incoming.abort()
        if self._counted:
            self._counted = False
            self.factory.connections -= 1
            self.factory.per_ip[self.client_ip] -= 1
            if self.factory.per_ip[self.client_ip] <= 0:
                del self.factory.per_ip[self.client_ip]

    def timeoutConnection(self) -> None:
        log.info("idle timeout client={ip}", ip=self.client_ip)
        if self._output_paused:
            # It does not read what we send: a 421 would never reach it, and waiting for
            # the close to flush would keep its slot for CLOSE_GRACE more seconds.
            self._closing = True
            self.transport.abortConnection()
            return
        self._close_with(replies.IDLE_TIMEOUT)

    def _close_with(self, reply: Reply) -> None:
        self._reply(reply)
        self._closing = True
        self._buffer = b""
        if self._mode == "data" and self._incoming is not None:
            self._incoming.abort()
            self._mode = "command"
        self._lose_connection()

    def _lose_connection(self) -> None:
        """Close after the pending replies are sent; abort if that does not happen in time
        (a client stuck in a TLS handshake or not reading must not keep its slot)."""
        self.transport.loseConnection()
        if self._abort_call is None:
            self._abort_call = self.callLater(CLOSE_GRACE, self._abort)

    def _abort(self) -> None:
        log.info("aborting connection that did not close client={ip}", ip=self.client_ip)
        self.transport.abortConnection()

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
        # While a command waits (the commit of its message, a password check), what the
        # client pipelines behind it stays in the buffer; reading stops only when that
        # grows past BUSY_BUFFER, so a quiet client costs no pause/resume system calls.
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
            if self._mode == "data":
                if not self._data_step():
                    break
            elif self._mode == "skip":
                end = self._buffer.find(b"\n")
                self._buffer = self._buffer[end + 1 :] if end >= 0 else b""
                if end >= 0:
                    self._mode = "command"
            else:
                limit = MAX_AUTH_LINE if self._mode == "auth" else MAX_COMMAND_LINE
                end = self._buffer.find(b"\n")
                if end < 0:
                    if len(self._buffer) >= limit:
                        self._buffer = b""
                        self._line_too_long()
                        self._mode = "skip"
                    break
                line, self._buffer = self._buffer[: end + 1], self._buffer[end + 1 :]
                if len(line) > limit:
                    self._line_too_long()
                    continue
                self._line(line[:-2] if line.endswith(b"\r\n") else line[:-1])
        self._update_reading()

    def _line_too_long(self) -> None:
        if self._mode == "auth":
            self._auth_done(replies.AUTH_MALFORMED)
        else:
            self._error(replies.LINE_TOO_LONG)

    def _line(self, line: bytes) -> None:
        if self._mode == "auth" and self._auth is not None:
            self._wait(self._auth_step(line))
            return
        if b"\r" in line or b"\0" in line:
            self._error(replies.BARE_NEWLINE_COMMAND)
            return
        # Undecodable octets survive as surrogates, so MAIL and RCPT can answer a UTF-8 address
        # with 553 5.6.7 (no SMTPUTF8); any other command with non-ASCII is refused here.
        text = line.decode("utf-8", "surrogateescape")
        verb, _, arg = text.strip(" ").partition(" ")
        handler = _COMMANDS.get(verb.upper())
        if handler is None:
            self._error(replies.UNRECOGNIZED)
            return
        if not text.isascii() and handler not in (SMTPServer.do_MAIL, SMTPServer.do_RCPT):
            self._error(replies.BAD_8BIT_COMMAND)
            return
        self._wait(handler(self, arg.strip(" ")))

    def _wait(self, result: defer.Deferred | None) -> None:
        """Hold the command stream until ``result`` (if any) has sent its reply."""
        if result is None:
            return
        self._busy = True
        self._update_reading()

        def resume(_: object) -> None:
            self._busy = False
            self._update_reading()
            self._pump()

        result.addErrback(self._internal_error)
        result.addBoth(resume)

    def _internal_error(self, failure: Failure) -> None:
        log.failure("internal error client={ip}", failure, ip=self.client_ip)
        self._reply(replies.LOCAL_ERROR)

    # -- replies -------------------------------------------------------------------------
    def _reply(self, reply: Reply) -> None:
        self.sendCode(reply.code, reply.message.encode("utf-8", "replace"))

    def sendCode(self, code: int, message: bytes = b"") -> None:
        """One reply, all its lines in one write (Twisted writes each line on its own)."""
        lines = message.splitlines() or [b""]
        head = b"%03d-" % code
        data = b"".join(head + line + b"\r\n" for line in lines[:-1])
        self._send(data + b"%03d " % code + lines[-1] + b"\r\n")

    def _send(self, data: bytes) -> None:
        """Straight to the socket when nothing is buffered (see ``fastwrite``)."""
        write_now(self.transport, data)

    def _error(self, reply: Reply) -> None:
        self._reply(reply)
        self._errors += 1
        if self._errors >= HARD_ERROR_LIMIT:
            log.info("too many errors client={ip}", ip=self.client_ip)
            self._close_with(replies.TOO_MANY_ERRORS)

    def _refuse_rcpt(self, reply: Reply, rcpt: str) -> None:
        self.factory.stats.refused[str(reply.code)] += 1
        log.info(
            "refused rcpt=<{rcpt}> from=<{sender}> client={ip} code={code} reason={reason}",
            rcpt=rcpt.encode("ascii", "backslashreplace").decode(),
            sender=self._sender_text(),
            ip=self.client_ip,
            code=reply.code,
            reason=reply.message,
        )
        self._error(reply)

    def _sender_text(self) -> str:
        return "" if self._from in (None, NULL_SENDER) else str(self._from)

    # -- session commands ----------------------------------------------------------------
    def _reset_transaction(self) -> None:
        self._from: Any = None
        self._mail_params: dict[str, str | None] = {}
        self._to: list[Recipient] = []
        self._incoming: Incoming | None = None
        self._reader: DataReader | None = None

    def do_HELO(self, rest: str, extended: bool = False) -> None:
        name = "EHLO" if extended else "HELO"
        if not rest:
            self._error(replies.BAD_HELO.format(name))
            return
        self._reset_transaction()
        self._helo = (rest.encode("ascii"), self.client_ip.encode())
        shown = _HELO_UNSAFE.sub("?", rest)[:255]
        greeting = replies.HELO_OK.format(
            self.policy.server.hostname, f"{shown} [{self.client_ip}]"
        )
        if not extended:
            self._reply(greeting)
            return
        lines = [greeting.text, *self._extensions()]
        self.sendCode(250, "\n".join(lines).encode())

    def do_EHLO(self, rest: str) -> None:
        self.do_HELO(rest, extended=True)

    def _extensions(self) -> list[str]:
        ext = [
            "PIPELINING",
            f"SIZE {self.policy.server.max_message_size}",
            "8BITMIME",
            "ENHANCEDSTATUSCODES",
        ]
        if self.canStartTLS and not self.startedTLS:
            ext.append("STARTTLS")
        if self._auth_offered():
            ext.append("AUTH PLAIN LOGIN")
        if self._etrn_allowed():
            ext.append("ETRN")
        return ext

    def do_RSET(self, rest: str) -> None:
        self._reset_transaction()
        self._reply(replies.RESET_OK)

    def do_NOOP(self, rest: str) -> None:
        self._reply(replies.NOOP_OK)

    def do_VRFY(self, rest: str) -> None:
        if not rest:
            self._error(replies.BAD_SYNTAX)
        else:
            self._reply(replies.VRFY_CANNOT)

    # -- ETRN (RFC 1985) -----------------------------------------------------------------
    def _etrn_allowed(self) -> bool:
        ip_range = self.policy.access.range_for(self.client_ip)
        return self.factory.etrn is not None and ip_range is not None and ip_range.allow_etrn

    def do_ETRN(self, rest: str) -> None:
        node = rest.strip()
        if not self._etrn_allowed():
            self._error(replies.ETRN_NOT_ALLOWED.format(node or "-", "not from your address"))
            return
        if self._from is not None:
            self._error(replies.ETRN_IN_TRANSACTION)
            return
        domain = node[1:] if node[:1] in ("@", "#") else node
        try:
            domain = parse_domain(domain, wildcard=True)
        except DomainError:
            self._error(replies.ETRN_SYNTAX)
            return
        flusher = self.factory.etrn
        assert flusher is not None
        keys = self._etrn_keys(node, domain, flusher)
        if not keys:
            self._error(replies.ETRN_NOT_ALLOWED.format(node, "not a domain we back up"))
            return
        try:
            count = sum(flusher.flush(key) for key in keys)
        except Exception:  # noqa: BLE001
            log.failure("ETRN {node} failed", node=node)
            self._error(replies.ETRN_UNABLE.format(node))
            return
        log.info("etrn node={node} client={ip} messages={n}", node=node, ip=self.client_ip, n=count)
        if count:
            self._reply(replies.ETRN_STARTED_COUNT.format(count, node))
        else:
            self._reply(replies.ETRN_NOTHING.format(node))

    def _etrn_keys(self, node: str, domain: str, flusher: QueueFlusher) -> list[str]:
        """``domain``: its route; ``@domain``: routes of it and its subdomains; ``#name``:
        the queue named like a route."""
        routes = [r.domain for r in self.policy.config.routes]
        if node.startswith("#"):
            return [r for r in routes if r == domain]
        if node.startswith("@"):
            return [r for r in routes if r.removeprefix("*.") == domain or r.endswith("." + domain)]
        return flusher.keys_for_domain(domain)

    def do_EXPN(self, rest: str) -> None:
        self._error(replies.NOT_IMPLEMENTED)

    def do_HELP(self, rest: str) -> None:
        self._reply(replies.HELP)

    def do_QUIT(self, rest: str) -> None:
        self._reply(replies.CLOSING)
        self._closing = True
        self._buffer = b""
        self._lose_connection()

    def do_UNKNOWN(self, rest: str) -> None:
        self._error(replies.UNRECOGNIZED)

    # -- MAIL ----------------------------------------------------------------------------
    def do_MAIL(self, rest: str) -> None:
        if self._from is not None:
            self._error(replies.NESTED_MAIL)
            return
        try:
            path, param_text = split_command_argument(rest, "FROM:")
            params = parse_params(param_text)
        except PathError:
            self._error(replies.BAD_MAIL_SYNTAX)
            return
        reply = self._check_mail_params(params)
        if reply is not None:
            self._error(reply)
            return
        try:
            sender = parse_path(path, allow_null=True)
        except PathError as e:
            bad = replies.UTF8_NEEDS_SMTPUTF8 if e.kind == "utf8" else replies.BAD_SENDER_ADDRESS
            self._error(bad.format(e) if "{}" in bad.text else bad)
            return
        try:
            self.validateFrom(self._helo, sender, params)
        except smtp.SMTPServerError as e:
            self._error(Reply(e.code, "", str(e.resp)))
            return
        self._from = NULL_SENDER if sender is None else sender
        self._mail_params = params
        self._reply(replies.SENDER_OK)

    def _check_mail_params(self, params: dict[str, str | None]) -> Reply | None:
        for key, value in params.items():
            if key == "SIZE":
                if value is None or not value.isdigit() or len(value) > 20:
                    return replies.BAD_PARAMETER.format("SIZE")
                if int(value) > self.policy.server.max_message_size:
                    return replies.SIZE_DECLARED_TOO_BIG.format(self.policy.server.max_message_size)
            elif key == "BODY":
                if (value or "").upper() not in ("7BIT", "8BITMIME"):
                    return replies.BAD_PARAMETER.format("BODY")
            elif key == "AUTH":
                continue  # RFC 4954 5: accepted, not trusted
            else:
                return replies.UNKNOWN_PARAMETER.format(key)
        return None

    def validateFrom(self, helo: Any, origin: Any, params: Any = None) -> Any:
        """The sender is accepted when the spool has room for the declared size."""
        needed = self.policy.server.min_free_space + int((params or {}).get("SIZE") or 0)
        try:
            free = self.factory.spool.free_space(at_least=needed)
        except OSError:
            raise smtp.SMTPServerError(451, replies.LOCAL_ERROR.message) from None
        if free < needed:
            log.warn("spool low on space: {free} octets free", free=free)
            raise smtp.SMTPServerError(452, replies.INSUFFICIENT_SPACE.message)
        return origin

    # -- RCPT ----------------------------------------------------------------------------
    def do_RCPT(self, rest: str) -> None:
        if self._from is None:
            self._error(replies.NEED_MAIL)
            return
        try:
            path, param_text = split_command_argument(rest, "TO:")
            params = parse_params(param_text)
        except PathError:
            self._error(replies.BAD_RCPT_SYNTAX)
            return
        if params:
            self._error(replies.UNKNOWN_PARAMETER.format(next(iter(params))))
            return
        try:
            mailbox = parse_path(path, allow_null=False)
        except PathError as e:
            reply = replies.UTF8_NEEDS_SMTPUTF8 if e.kind == "utf8" else replies.BAD_ADDRESS
            self._refuse_rcpt(reply.format(e) if "{}" in reply.text else reply, path[1:-1])
            return
        assert mailbox is not None
        if mailbox.routing is not None:
            self._refuse_rcpt(replies.ROUTING_IN_ADDRESS.format(mailbox.routing), path[1:-1])
            return
        if len(self._to) >= self.policy.server.max_recipients:
            # Not an error of the client's: it sends the rest in another transaction.
            self._reply(replies.TOO_MANY_RECIPIENTS)
            return
        try:
            recipient = self.validateTo(_user(mailbox, self))
        except smtp.SMTPServerError as e:
            self._refuse_rcpt(Reply(e.code, "", str(e.resp)), str(mailbox))
            return
        if recipient.address.lower() not in {r.address.lower() for r in self._to}:
            self._to.append(recipient)  # a repeated recipient is accepted once (no duplicates)
        self._reply(replies.RECIPIENT_OK)

    def validateTo(self, user: smtp.User) -> Recipient:
        """Routes, the IP-range matrix and the address list decide; a refusal raises
        ``SMTPBadRcpt`` carrying the reply (with its enhanced status code)."""
        mailbox: Mailbox = user.mailbox  # type: ignore[attr-defined]
        policy = self.policy
        route = policy.routes.lookup(mailbox.domain)
        sender_domain = None if self._from is NULL_SENDER else self._from.domain
        refusal = policy.access.decide(
            self.client_ip,
            bool(self.authenticated),
            policy.routes.sender_kind(sender_domain),
            route.treat_recipient_as if route is not None else "external",
        )
        if route is None and refusal is not None:
            refusal = replies.RELAY_DENIED.format(mailbox.domain)
        if refusal is None and route is not None and not route.addresses.allows(str(mailbox)):
            refusal = replies.UNKNOWN_USER.format(str(mailbox))
        if refusal is not None:
            raise smtp.SMTPBadRcpt(str(mailbox), refusal.code, refusal.message)
        return Recipient(str(mailbox), route.domain if route is not None else None)

    # -- DATA ----------------------------------------------------------------------------
    def do_DATA(self, rest: str) -> None:
        if rest:
            self._error(replies.DATA_ARGUMENT)
            return
        if self._from is None:
            self._error(replies.NEED_MAIL_FOR_DATA)
            return
        if not self._to:
            self._error(replies.NO_VALID_RCPT)
            return
        incoming = self.factory.spool.incoming()
        if incoming.error is not None:
            self._local_failure(incoming, incoming.error)
            return
        self._incoming = incoming
        incoming.write(self._received_header(incoming.id))
        server = self.policy.server
        self._reader = DataReader(
            incoming.write, server.max_message_size, server.max_received_headers
        )
        self._mode = "data"
        self._reply(replies.START_DATA)

    def _data_step(self) -> bool:
        """Feed the body to the reader; True when the end of data was reached."""
        assert self._reader is not None
        used, done = self._reader.feed(self._buffer)
        self._buffer = self._buffer[used:]
        if done:
            self._mode = "command"
            self._wait(self._end_of_data())
        return done

    def _end_of_data(self) -> defer.Deferred | None:
        incoming, reader = self._incoming, self._reader
        assert incoming is not None and reader is not None
        if reader.error is not None:
            incoming.abort()
            log.info(
                "refused message from=<{sender}> client={ip} size={size} code={code} "
                "reason={reason}",
                sender=self._sender_text(),
                ip=self.client_ip,
                size=reader.size,
                code=reader.error.code,
                reason=reader.error.message,
            )
            self._error(reader.error)
            self._reset_transaction()
            return None
        if incoming.error is not None:
            self._local_failure(incoming, incoming.error)
            return None
        envelope = Envelope(
            id=incoming.id,
            sender=self._sender_text(),
            recipients=self._to,
            received_at=self.factory.clock.seconds(),
            size=incoming.size,
            client_ip=self.client_ip,
            helo=(self._helo[0] or b"").decode("ascii", "replace"),
            params=dict(self._mail_params),
        )
        self._reset_transaction()
        d = self.factory.spool.commit(incoming, envelope)

        def committed(_: object) -> None:
            log.info(
                "accepted id={id} from=<{sender}> size={size} nrcpt={nrcpt} client={ip} tls={tls}",
                id=envelope.id,
                sender=envelope.sender,
                size=envelope.size,
                nrcpt=len(envelope.recipients),
                ip=self.client_ip,
                tls=bool(self.startedTLS),
            )
            self._reply(replies.QUEUED.format(envelope.id))
            self.factory.stats.accepted += 1
            self._errors = 0  # like Postfix: errors count until mail is delivered
            try:
                self.factory.wakeup(envelope)
            except Exception:  # noqa: BLE001 - the 250 is sent; never a second reply
                log.failure("wakeup failed for id={id}", id=envelope.id)

        def failed(failure: Failure) -> None:
            self._local_failure(None, failure.value)

        return d.addCallbacks(committed, failed)

    def _local_failure(self, incoming: Incoming | None, error: BaseException) -> None:
        """A local problem (disk full, I/O error): always 4xx, never 5xx; nothing kept."""
        if incoming is not None:
            incoming.abort()
        reply = replies.INSUFFICIENT_SPACE if is_out_of_space(error) else replies.QUEUE_WRITE_ERROR
        log.error(
            "queue write failed client={ip} code={code} error={error}",
            ip=self.client_ip,
            code=reply.code,
            error=str(error),
        )
        self._reply(reply)
        self._reset_transaction()

    def _received_header(self, queue_id: str) -> bytes:
        helo = _HELO_UNSAFE.sub("?", (self._helo[0] or b"").decode("ascii", "replace"))[:255]
        proto = "ESMTP" if self._helo[0] is not None else "SMTP"
        if self.startedTLS:
            proto += "S"
        if self.authenticated:
            proto += "A"
        tls = _tls_description(self.transport) if self.startedTLS else ""
        when = format_datetime(datetime.fromtimestamp(self.factory.clock.seconds(), UTC))
        for_ = f"\r\n\tfor <{self._to[0].address}>" if len(self._to) == 1 else ""
        header = (
            f"Received: from {helo or 'unknown'} ([{self.client_ip}])\r\n"
            f"\tby {self.policy.server.hostname} (mxbackup) with {proto}{tls} id {queue_id}"
            f"{for_}; {when}\r\n"
        )
        return header.encode("ascii", "replace")

    # -- STARTTLS (RFC 3207) --------------------------------------------------------------
    def ext_STARTTLS(self, rest: str) -> None:
        if rest:
            self._error(replies.BAD_SYNTAX)
        elif self.startedTLS:
            self._error(replies.TLS_ALREADY)
        elif not self.canStartTLS:
            self._error(replies.TLS_UNAVAILABLE)
        elif self._from is not None:
            self._error(replies.TLS_IN_TRANSACTION)
        else:
            self._reply(replies.START_TLS)
            # Anything the client pipelined after STARTTLS came in plain text: drop it, and
            # forget everything learned before the handshake (RFC 3207 4.2).
            self._buffer = b""
            self.transport.startTLS(self.ctx)
            self.startedTLS = True
            self._helo = (None, self.client_ip.encode())
            self.authenticated = False
            self.auth_user = None
            self._reset_transaction()

    # -- AUTH (RFC 4954) -----------------------------------------------------------------
    def _auth_offered(self) -> bool:
        return bool(self.policy.accounts) and bool(self.startedTLS) and not self.authenticated

    def ext_AUTH(self, rest: str) -> defer.Deferred | None:
        if not self.policy.accounts:
            self._error(replies.AUTH_NOT_AVAILABLE)
            return None
        if not self.startedTLS:
            self._error(replies.AUTH_NEEDS_TLS)
            return None
        if self.authenticated:
            self._error(replies.AUTH_ALREADY)
            return None
        if self._from is not None:
            self._error(replies.AUTH_IN_TRANSACTION)
            return None
        mechanism, _, initial = rest.partition(" ")
        mechanism = mechanism.upper()
        if mechanism not in ("PLAIN", "LOGIN"):
            self._error(replies.AUTH_MECHANISM)
            return None
        self._auth = _AuthExchange(mechanism)
        self._mode = "auth"
        if initial:
            return self._auth_step(initial.encode("ascii"))
        self._reply(replies.AUTH_CHALLENGE.format(self._auth.challenge()))
        return None

    def _auth_step(self, line: bytes) -> defer.Deferred | None:
        exchange = self._auth
        assert exchange is not None
        if line.strip() == b"*":
            return self._auth_done(replies.AUTH_ABORTED)
        try:
            decoded = b"" if line.strip() == b"=" else base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            return self._auth_done(replies.AUTH_BAD_BASE64)
        try:
            credentials = exchange.respond(decoded)
        except ValueError:
            return self._auth_done(replies.AUTH_MALFORMED)
        if credentials is None:
            self._reply(replies.AUTH_CHALLENGE.format(exchange.challenge()))
            return None
        username, password = credentials
        d = self.factory.check_password(username, password)

        def checked(ok: bool) -> None:
            if ok:
                self.authenticated = True
                self.auth_user = username
                log.info("authenticated user={user} client={ip}", user=username, ip=self.client_ip)
                self._auth_done(replies.AUTH_OK)
            else:
                log.info(
                    "authentication failed user={user} client={ip}",
                    user=username,
                    ip=self.client_ip,
                )
                self._auth_done(replies.AUTH_FAILED)

        def failed(failure: Failure) -> None:
            log.failure("password check failed client={ip}", failure, ip=self.client_ip)
            self._auth_done(replies.LOCAL_ERROR)

        return d.addCallbacks(checked, failed)

    def _auth_done(self, reply: Reply) -> None:
        self._auth = None
        self._mode = "command"
        if reply.code >= 400:
            self._error(reply)
        else:
            self._reply(reply)
        return None


class _AuthExchange:
    """The challenge/response steps of one AUTH PLAIN or LOGIN exchange."""

    def __init__(self, mechanism: str) -> None:
        self.mechanism = mechanism
        self.username: str | None = None

    def challenge(self) -> str:
        if self.mechanism == "PLAIN":
            return ""
        prompt = b"Username:" if self.username is None else b"Password:"
        return base64.b64encode(prompt).decode()

    def respond(self, data: bytes) -> tuple[str, str] | None:
        """Credentials when complete, None when another challenge is due; ValueError when
        the response is malformed."""
        text = data.decode("utf-8")  # UnicodeDecodeError is a ValueError
        if self.mechanism == "PLAIN":
            parts = text.split("\0")
            if len(parts) != 3 or not parts[1]:
                raise ValueError("malformed PLAIN response")
            if parts[0] and parts[0] != parts[1]:
                raise ValueError("authorization identity differs (RFC 4616 2)")
            return parts[1], parts[2]
        if self.username is None:
            if not text:
                raise ValueError("empty user name")
            self.username = text
            return None
        return self.username, text


class _NullSender:
    def __repr__(self) -> str:
        return "<>"


NULL_SENDER: Any = _NullSender()


def _user(mailbox: Mailbox, server: SMTPServer) -> smtp.User:
    """A Twisted ``User`` for ``validateTo``, carrying our strictly parsed mailbox."""
    user = smtp.User.__new__(smtp.User)
    user.dest = mailbox
    user.helo = server._helo
    user.protocol = server
    user.orig = server._from
    user.mailbox = mailbox  # type: ignore[attr-defined]
    return user


def _tls_description(transport: Any) -> str:
    try:
        conn = transport.getHandle()
        return f" ({conn.get_protocol_version_name()} {conn.get_cipher_name()})"
    except Exception:  # noqa: BLE001 - informational only
        return ""


_COMMANDS: dict[str, Callable[[SMTPServer, str], defer.Deferred | None]] = {
    "HELO": SMTPServer.do_HELO,
    "EHLO": SMTPServer.do_EHLO,
    "MAIL": SMTPServer.do_MAIL,
    "RCPT": SMTPServer.do_RCPT,
    "DATA": SMTPServer.do_DATA,
    "RSET": SMTPServer.do_RSET,
    "NOOP": SMTPServer.do_NOOP,
    "VRFY": SMTPServer.do_VRFY,
    "EXPN": SMTPServer.do_EXPN,
    "HELP": SMTPServer.do_HELP,
    "QUIT": SMTPServer.do_QUIT,
    "STARTTLS": SMTPServer.ext_STARTTLS,
    "ETRN": SMTPServer.do_ETRN,
    "AUTH": SMTPServer.ext_AUTH,
}
