"""One delivery attempt: connect to a target and hand over a batch of messages.

Built on ``twisted.mail.smtp.ESMTPSenderFactory`` / ``ESMTPSender`` with ``retries=0`` (the
scheduler owns retries), and the fixes of ``shared/reference/twisted-mail-pitfalls.md``, each
pinned by ``tests/test_smtp_out.py``:

- 11: dot-stuffing is done across chunk boundaries (Twisted's works per 16 KiB chunk), and the
  stored message, already canonical CRLF, is sent as is (Twisted's turns every LF into CRLF,
  which would make CR CR LF of our CRLF);
- 12: authentication and transport security are required only when the route says so; a
  failed opportunistic STARTTLS falls back to plain text on a new connection;
- 13: SIZE and BODY=8BITMIME are passed when the target offers them; TCP_NODELAY is set.
Several messages go over one connection (RSET between them), one transaction per message
carrying all its recipients for this target.  Every recipient gets its own ``Outcome``.

It knows no spool paths beyond the file it is told to send, and nothing of the schedule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer, error, protocol, ssl
from twisted.logger import Logger
from twisted.mail import smtp
from twisted.protocols import basic
from twisted.python.failure import Failure

from mxbackup.wire.contract import Candidate, Outcome, Settings, classify
from mxbackup.wire.fastwrite import write_now

log = Logger(namespace="mxbackup.smtp_out")
WHOLE_MESSAGE = 256 * 1024  # up to this size a message is read and sent in one write


class Gate:
    """Opens once, or fails once, when a Deferred fires; callers wait with ``when_settled``."""

    def __init__(self, d: defer.Deferred) -> None:
        self.state = "waiting"  # waiting | open | failed
        self.why = ""
        self._waiters: list[Callable[[], None]] = []
        d.addCallbacks(self._settle, self._fail)

    def _settle(self, _: object) -> None:
        self.state = "open"
        self._wake()

    def _fail(self, failure: Failure) -> None:
        self.state, self.why = "failed", str(failure.value) or failure.type.__name__
        self._wake()

    def _wake(self) -> None:
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter()

    def when_settled(self, waiter: Callable[[], None]) -> None:
        if self.state == "waiting":
            self._waiters.append(waiter)
        else:
            waiter()


@dataclass
class Job:
    """One message for one target: all its pending recipients there."""

    qid: str
    sender: str  # "" for <>
    recipients: list[str]
    path: str
    size: int
    eight_bit: bool = False
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    # Called when its transaction has ended in a session that goes on (its outcomes are
    # final then): the caller may record them before the connection closes.
    on_done: Callable[[Job], None] | None = None
    recorded: bool = False  # the caller has recorded its outcomes (set by the caller)
    # Opens when the caller may start the transaction (its state is on disk): connecting
    # and EHLO go on meanwhile.
    gate: Gate | None = None

    @property
    def done(self) -> bool:
        return len(self.outcomes) == len(self.recipients)

    def finish_all(self, outcome: Outcome) -> None:
        for rcpt in self.recipients:
            self.outcomes.setdefault(rcpt, outcome)


@dataclass
class Attempt:
    """The result of ``deliver``: whether a target talked SMTP with us (so it is up)."""

    connected: bool
    remote: str
    error: str = ""
    tls_failed: bool = False  # STARTTLS or its handshake failed before any transaction
    # The session ended before all its jobs were done (connection reset or closed, timeout,
    # 421): the target is in trouble even if it took some of the mail.
    broken: bool = False


class DotStuffer:
    """Stateful dot-stuffing of CRLF text delivered in arbitrary chunks (pitfall 11)."""

    def __init__(self) -> None:
        self._tail = b"\r\n"  # the start of the message is the start of a line
        self.last = b""

    def __call__(self, chunk: bytes) -> bytes:
        if not chunk:
            return chunk
        joined = self._tail + chunk
        # Any inserted dot sits after "\r\n." whose dot is in ``chunk`` (the tail is 2 octets).
        out = joined.replace(b"\r\n.", b"\r\n..")[len(self._tail) :]
        self._tail = joined[-2:]
        self.last = out
        return out

    def ends_with_crlf(self) -> bool:
        return self._tail == b"\r\n"


class Sender(smtp.ESMTPSender):
    """Sends the factory's jobs one after another over one connection."""

    factory: SenderFactory

    @property
    def stage(self) -> str:
        """Where the session is; kept on the factory, which outlives the protocol."""
        return self.factory.stage

    def __setattr__(self, name: str, value: Any) -> None:
        # ESMTPClient.__setattr__ writes straight into __dict__, which bypasses a property
        # setter: without this the factory never learnt the stage.
        if name == "stage":
            self.factory.stage = value
        else:
            super().__setattr__(name, value)

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.job: Job | None = None
        self.extensions: dict[bytes, bytes | None] = {}
        self._stuffer = DotStuffer()
        self._file: Any = None
        self._in_transaction = False  # MAIL accepted, final reply to the data not yet read
        self._rcpts_waiting: list[str] = []
        self._gate_waiting = False
        self._ending = False

    def _registerAuthenticators(self) -> None:
        self.registerAuthenticator(smtp.PLAINAuthenticator(self.username))
        self.registerAuthenticator(smtp.LOGINAuthenticator(self.username))

    def connectionMade(self) -> None:
        self.stage = "greeting"
        for transport in (self.transport, getattr(self.transport, "transport", None)):
            try:
                transport.setTcpNoDelay(True)  # pitfall: Nagle delays the final ".\r\n"
                break
            except Exception:  # noqa: BLE001, S112 - TLS wrappers may not have it
                continue
        super().connectionMade()

    def esmtpState_serverConfig(self, code: int, resp: bytes) -> None:
        self.stage = "ehlo"
        self.factory.session_started = True
        items: dict[bytes, bytes | None] = {}
        for line in resp.splitlines()[1:]:
            word, _, value = line.partition(b" ")
            items[word.upper()] = value or None
        self.extensions = items
        if self._tlsMode and self.factory.tls_started:
            self.factory.tls_done = True  # the EHLO answered inside TLS: the handshake worked
        if b"STARTTLS" in items and self.context is not None and not self._tlsMode:
            self.stage = "starttls"
        super().esmtpState_serverConfig(code, resp)

    def esmtpState_starttls(self, code: int, resp: bytes) -> None:
        self.factory.tls_started = True
        super().esmtpState_starttls(code, resp)

    def authenticate(self, code: int, resp: bytes, items: dict) -> None:
        self.stage = "auth"
        super().authenticate(code, resp, items)

    def smtpState_helo(self, code: int, resp: bytes) -> None:
        """EHLO was refused: HELO (Twisted's fallback).  Its refusal ends the session; in
        Twisted the failure handler stays smtpState_helo, which would send HELO for ever."""
        super().smtpState_helo(code, resp)
        self._okresponse = self._helo_accepted
        self._failresponse = self._helo_refused

    def _helo_accepted(self, code: int, resp: bytes) -> None:
        self.factory.session_started = True
        self.smtpState_from(code, resp)

    def _helo_refused(self, code: int, resp: bytes) -> None:
        if code == 421:
            self._server_closing(code, resp)
        else:
            self.sendError(smtp.SMTPClientError(code, resp))

    # -- the jobs --------------------------------------------------------------------------
    def getMailFrom(self) -> str | None:
        self.job = self.factory.next_job()
        return None if self.job is None else self.job.sender

    def getMailTo(self) -> list[str]:
        assert self.job is not None
        return self.job.recipients

    def getMailData(self) -> Any:
        assert self.job is not None
        self._stuffer = DotStuffer()
        self._close_file()
        # FileSender reads it; closed when the transfer ends or the connection does
        self._file = open(self.job.path, "rb")  # noqa: SIM115
        return self._file

    def _close_file(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._close_file()
        # The TLS layer hands its own reason (a failed certificate check...) to the protocol;
        # the factory only hears that the TCP connection was aborted.
        self.factory.lost_reason = reason
        super().connectionLost(reason)

    def smtpState_from(self, code: int, resp: bytes) -> None:
        job = self.factory.peek_job()
        while job is not None and job.gate is not None and job.gate.state == "failed":
            why = f"local: {job.gate.why}"
            job.finish_all(Outcome("tempfail", 0, why, self.factory.remote, tried=False))
            job = self.factory.peek_job()  # not sent: next_job skips it
        if job is not None and job.gate is not None and job.gate.state == "waiting":
            # Its state is still on its way to the disk.  Any reply meanwhile is unasked
            # for (an idle 421...): the session ends.
            self._expected = []
            self._okresponse = self._failresponse = self._server_closing
            if not self._gate_waiting:
                self._gate_waiting = True
                job.gate.when_settled(lambda: self._gate_settled(code, resp))
            return
        self._from = self.getMailFrom()
        self._failresponse = self.smtpTransferFailed
        self._in_transaction = False
        if self._from is None:
            self._disconnectFromServer()
            return
        assert self.job is not None
        self.stage = "mail"
        params = b""
        if b"SIZE" in self.extensions:
            params += b" SIZE=%d" % self.job.size
        if self.job.eight_bit and b"8BITMIME" in self.extensions:
            params += b" BODY=8BITMIME"
        mail = b"MAIL FROM:<" + self._from.encode() + b">" + params
        if b"PIPELINING" in self.extensions:
            self._pipeline(mail)
            return
        self.sendLine(mail)
        self._expected = [250]
        self._okresponse = self._mail_accepted

    def _gate_settled(self, code: int, resp: bytes) -> None:
        self._gate_waiting = False
        t = self.transport
        if not self._ending and t is not None and t.connected and not t.disconnecting:
            self.resetTimeout()  # the reply timer counts from now, not from before the wait
            self.smtpState_from(code, resp)

    def _mail_accepted(self, code: int, resp: bytes) -> None:
        self._in_transaction = True
        self.smtpState_to(code, resp)

    # -- PIPELINING (RFC 2920): MAIL, every RCPT and DATA in one go, then their replies ------
    def _pipeline(self, mail: bytes) -> None:
        """Send MAIL, the RCPTs and DATA in one write, then read the replies in order."""
        self._rcpts_waiting = list(self.getMailTo())
        lines = [mail, *(b"RCPT TO:<" + a.encode() + b">" for a in self._rcpts_waiting), b"DATA"]
        self._send_lines(lines)
        self.toAddressesResult = []
        self.successAddresses = []
        self._mail_reply: tuple[int, bytes] | None = None
        self._expected = range(0, 1000)  # every reply goes to the handler of its command
        self._okresponse = self._failresponse = self._pipelined_mail

    def _pipelined_mail(self, code: int, resp: bytes) -> None:
        if code == 421:
            self._server_closing(code, resp)
            return
        if code in smtp.SUCCESS:
            self._in_transaction = True
        else:
            self._mail_reply = (code, resp)  # refused: the RCPT and DATA replies mean nothing
        self.stage = "rcpt"
        self._okresponse = self._failresponse = self._pipelined_rcpt

    def _pipelined_rcpt(self, code: int, resp: bytes) -> None:
        address = self._rcpts_waiting.pop(0)
        self.toAddressesResult.append((address, code, resp))
        if code in smtp.SUCCESS:
            self.successAddresses.append(address)
        if not self._rcpts_waiting:
            self.stage = "data"
            self._okresponse = self._failresponse = self._pipelined_data

    def _pipelined_data(self, code: int, resp: bytes) -> None:
        if code == 354 and self._mail_reply is None and self.successAddresses:
            self.smtpState_data(code, resp)
            return
        if code == 421:
            self._server_closing(code, resp)
            return
        if code == 354:
            # DATA accepted although nothing can be delivered: RFC 2920 3.1 says to send the
            # lone dot; its reply closes the (empty) transaction, then the MAIL and RCPT
            # replies decide, as when DATA is refused.
            self._in_transaction = False
            self.sendLine(b".")
            self._expected = range(0, 1000)
            self._okresponse = self._failresponse = self._lone_dot_reply
            return
        self._pipelined_refused(code, resp)

    def _lone_dot_reply(self, code: int, resp: bytes) -> None:
        if code != 421:
            self._pipelined_refused(code, resp)
            return
        # The message's fate is known from its own replies; then no MAIL into a closing session.
        if self._mail_reply is not None:
            self.stage = "mail"
            code_, resp_ = self._mail_reply
        else:
            code_, resp_ = code, b"No recipients accepted"
        self.sentMail(code_, resp_, 0, self.toAddressesResult, self.log)
        self._from = None
        self._server_closing(code, resp)

    def _pipelined_refused(self, code: int, resp: bytes) -> None:
        if self._mail_reply is not None:
            self.stage = "mail"  # sentMail: every recipient shares the MAIL reply's fate
            self.smtpState_msgSent(*self._mail_reply)
        elif self.successAddresses:
            self.smtpState_msgSent(code, resp)  # DATA refused: so are the accepted recipients
        else:
            self.smtpState_msgSent(code, b"No recipients accepted")

    def _server_closing(self, code: int, resp: bytes) -> None:
        """421 (RFC 5321 3.8): the target is closing the session.  No more MAIL into it; a
        message refused with it at MAIL was not tried."""
        self.factory.current_untried = self.stage == "mail"
        self.sendError(smtp.SMTPClientError(code, resp))

    def smtpTransferFailed(self, code: int, resp: bytes) -> None:
        if code == 421:
            self._server_closing(code, resp)
            return
        super().smtpTransferFailed(code, resp)

    def smtpState_msgSent(self, code: int, resp: bytes) -> None:
        """The message is done with (sent, or refused).  Twisted always sends RSET next, a
        round trip per message; it is needed only while a transaction is open (MAIL was
        accepted, the final reply to the data was not received)."""
        if self._from is not None:
            self.sentMail(code, resp, len(self.successAddresses), self.toAddressesResult, self.log)
        self.toAddressesResult = []
        self._from = None
        if self._in_transaction:
            self._in_transaction = False
            self.sendLine(b"RSET")
            self._expected = smtp.SUCCESS
            self._okresponse = self.smtpState_from
            self._failresponse = self._server_closing  # a target that refuses RSET: done
            return
        self.smtpState_from(code, resp)

    def smtpState_toOrData(self, code: int, resp: bytes) -> None:
        self.stage = "rcpt"
        if self.lastAddress is not None:
            self.toAddressesResult.append((self.lastAddress, code, resp))
            if code in smtp.SUCCESS:
                self.successAddresses.append(self.lastAddress)
        try:
            self.lastAddress = next(self.toAddresses)
        except StopIteration:
            if self.successAddresses:
                self.stage = "data"
                self.sendLine(b"DATA")
                self._expected = [354]
                self._okresponse = self.smtpState_data
            else:
                self.smtpState_msgSent(code, b"No recipients accepted")
        else:
            self.sendLine(b"RCPT TO:<" + self.lastAddress.encode() + b">")

    def smtpState_disconnect(self, code: int, resp: bytes) -> None:
        self.factory.quit_acked = True
        super().smtpState_disconnect(code, resp)

    def sendLine(self, line: bytes) -> None:
        self._send_lines([line])

    def _send_lines(self, lines: list[bytes]) -> None:
        if self.debug:
            for line in lines:
                self.log.append(b">>> " + line)
        write_now(self.transport, b"".join(line + b"\r\n" for line in lines))

    def smtpState_data(self, code: int, resp: bytes) -> None:
        self._in_transaction = False  # the reply to the end of data closes it, whatever it is
        assert self.job is not None
        if self.job.size <= WHOLE_MESSAGE:
            # Small enough to send in one write, end of data included: no producer to set up
            # and take down for a single chunk.
            self._stuffer = DotStuffer()
            with open(self.job.path, "rb") as f:
                data = self._stuffer(f.read())
            end = b".\r\n" if self._stuffer.ends_with_crlf() else b"\r\n.\r\n"
            self.resetTimeout()
            write_now(self.transport, data + end)
            self._expected = smtp.SUCCESS
            self._okresponse = self.smtpState_msgSent
            self._failresponse = self.smtpTransferFailed
            return
        sender = basic.FileSender()
        d = sender.beginFileTransfer(self.getMailData(), self.transport, self.transformChunk)
        d.addCallbacks(self.finishedFileTransfer, self._transferFailed)
        self._expected = smtp.SUCCESS
        self._okresponse = self.smtpState_msgSent
        self._failresponse = self.smtpTransferFailed

    def _transferFailed(self, failure: Failure) -> None:
        """FileSender gives up only when the transport stops it, i.e. the connection is
        going away: its "Consumer asked us to stop producing" is no reason worth keeping."""
        self._close_file()
        if self.transport is not None and self.transport.connected:
            self.sendError(failure.value)

    def transformChunk(self, chunk: bytes) -> bytes:
        self.resetTimeout()
        return self._stuffer(chunk)

    def finishedFileTransfer(self, lastsent: bytes) -> None:
        self._close_file()
        self.sendLine(b"." if self._stuffer.ends_with_crlf() else b"\r\n.")

    def sentMail(self, code: int, resp: bytes, numOk: int, addresses: list, log: Any) -> None:
        job = self.job
        assert job is not None
        text = _text(resp)
        remote = self.factory.remote
        if self.stage == "mail" or not addresses:
            # MAIL FROM refused: every recipient shares that fate.
            job.finish_all(Outcome(classify(code), code, text, remote))
        else:
            for addr, rcode, rresp in addresses:
                rcpt = addr.decode() if isinstance(addr, bytes) else str(addr)
                if rcode in smtp.SUCCESS:
                    job.outcomes[rcpt] = Outcome(classify(code), code, text, remote)
                else:
                    job.outcomes[rcpt] = Outcome(classify(rcode), rcode, _text(rresp), remote)
        self.factory.job_done(job)
        self.stage = "mail"

    def sendError(self, exc: Exception) -> None:
        """Anything that ends the session early: the rest of the jobs are tempfailed by the
        factory when the connection closes; before MAIL nothing is final (auth, TLS...)."""
        self._ending = True  # QUIT or close follows: nothing more is started
        if not self.factory.session_error:  # the first error is the cause
            self.factory.session_error = _describe(exc, self.stage)
        if self.stage == "starttls" or isinstance(exc, smtp.TLSError | smtp.TLSRequiredError):
            # TLS was refused, failed, or is required and not offered: this target cannot
            # take the mail as the route wants it (the next candidate may)
            self.factory.tls_failed = True
        if self.stage in ("greeting", "ehlo", "auth") and _refusal(exc):
            # The target answered, and said no (bad credentials, no usable AUTH, 5xx to
            # EHLO): the mail was tried, and the target is not usable as it is.
            self.factory.refused = True
        smtp.SMTPClient.sendError(self, exc)
        if isinstance(exc, smtp.SMTPTimeoutError) and self.transport is not None:
            # loseConnection waits for our output to drain, which a stalled target never
            # reads: the connection (and its messages) would stay in flight for ever.
            self.transport.abortConnection()


class SenderFactory(smtp.ESMTPSenderFactory):
    protocol = Sender
    noisy = False  # no "Starting/Stopping factory" lines: each attempt logs its own line

    def __init__(self, jobs: list[Job], settings: Settings, context: Any, remote: str) -> None:
        username = (settings.username or "").encode()
        password = (settings.password or "").encode()
        requires_tls = settings.security in ("ssl", "starttls_required") or bool(
            settings.username and not settings.allow_plaintext_auth
        )
        super().__init__(
            username,
            password,
            "",
            [],
            None,
            defer.Deferred(),
            retries=0,
            timeout=settings.reply_timeout,
            contextFactory=context,
            heloFallback=not settings.username and not requires_tls,
            requireAuthentication=bool(settings.username),
            requireTransportSecurity=requires_tls,
        )
        self.result.addErrback(lambda f: None)  # the factory's own result is unused
        self.domain = settings.helo_name.encode()
        self.jobs = list(jobs)
        self.remote = remote
        self.session_started = False
        self.tls_started = False
        self.tls_done = False
        self.tls_failed = False
        self.session_error = ""
        self.refused = False  # the target refused us before any MAIL (AUTH, EHLO)
        self.quit_acked = False  # the target answered our QUIT
        self.current_untried = False  # a 421 at MAIL: the message being started was not tried
        self.lost_reason: Failure | None = None
        self.stage = "connect"
        self.finished: defer.Deferred = defer.Deferred()
        self._position = 0

    def peek_job(self) -> Job | None:
        """The job ``next_job`` would return, without taking it."""
        for job in self.jobs[self._position :]:
            if not job.done:
                return job
        return None

    def next_job(self) -> Job | None:
        while self._position < len(self.jobs):
            job = self.jobs[self._position]
            self._position += 1
            if not job.done:
                return job
        return None

    def job_done(self, job: Job) -> None:
        if job.on_done is not None:
            job.on_done(job)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        self._end(reason)

    def clientConnectionLost(self, connector: Any, reason: Failure) -> None:
        self._end(reason)

    def _end(self, reason: Failure) -> None:
        if self.finished.called:
            return
        if self.lost_reason is not None:
            reason = self.lost_reason
        why = self.session_error or _describe(reason.value, self.stage)
        # A handshake that fails ends the connection without a reply; one that works is
        # followed by an EHLO answer inside TLS.  Anything later (AUTH...) is no TLS failure.
        tls_failed = self.tls_failed or (self.tls_started and not self.tls_done)
        pending = Outcome("tempfail", 0, why, self.remote)
        # Not tried: the session was up and ended before the message's MAIL (a lost
        # connection, a timeout, a 421).  A connection that never came up, or a target that
        # refused us outright (AUTH...), counts as a try.
        reached = self.session_started and not self.refused
        untried = replace(pending, tried=False) if reached else pending
        first_untried = self._position - (1 if self.current_untried else 0)
        # A probe (no jobs) proves the target usable only by a clean end: QUIT answered.
        broken = self.refused or (not self.jobs and not self.quit_acked)
        for i, job in enumerate(self.jobs):
            if not job.done:
                broken = True
                # jobs before _position were started (MAIL sent); the rest never were
                job.finish_all(pending if i < first_untried else untried)
        connected = self.session_started and not tls_failed
        self.finished.callback(Attempt(connected, self.remote, why, tls_failed, broken))


def _refusal(exc: BaseException) -> bool:
    """A "no" from the target (not a lost connection, a timeout or a 421)."""
    if isinstance(exc, smtp.AUTHDeclinedError | smtp.AUTHRequiredError):
        return True
    if isinstance(exc, smtp.SMTPTimeoutError):
        return False
    code = getattr(exc, "code", 0) or 0
    return isinstance(exc, smtp.SMTPClientError) and code >= 400 and code != 421


def _text(resp: bytes | str) -> str:
    if isinstance(resp, bytes):
        resp = resp.decode("utf-8", "replace")
    return " ".join(resp.split())


def _describe(exc: BaseException, stage: str) -> str:
    if isinstance(exc, error.TimeoutError | smtp.SMTPTimeoutError):
        return f"{stage}: timed out"
    if isinstance(exc, smtp.TLSRequiredError):  # its 502 is Twisted's, not the target's
        return f"{stage}: the target does not offer STARTTLS, and the route needs TLS"
    if isinstance(exc, smtp.AUTHRequiredError):
        return f"{stage}: the target offers no AUTH mechanism we can use (PLAIN, LOGIN)"
    if isinstance(exc, VerificationError):
        return f"{stage}: TLS certificate not valid for the target's name"
    if isinstance(exc, SSL.Error):
        reasons = [r[-1] for r in (exc.args[0] if exc.args else []) if isinstance(r, tuple) and r]
        return f"{stage}: TLS failed: {'; '.join(reasons) or exc}"
    if isinstance(exc, smtp.SMTPClientError):
        code = exc.code if exc.code and exc.code > 0 else ""
        return f"{stage}: {code} {_text(exc.resp)}".replace("  ", " ").strip()
    if isinstance(exc, error.ConnectionDone) and stage != "connect":
        return f"{stage}: connection closed by the target"
    return f"{stage}: {exc.__class__.__name__}: {exc}".rstrip(": ")


def client_context(settings: Settings, host: str) -> Any:
    """The TLS options for ``host``: verified with service-identity against the system trust
    store (or ``ca_file``), or unverified when the route says so."""
    if not settings.verify_certificate:
        return ssl.CertificateOptions(verify=False)
    trust: Any = ssl.platformTrust()
    if settings.ca_file:
        with open(settings.ca_file, "rb") as f:
            trust = ssl.trustRootFromCertificates(
                [ssl.Certificate.loadPEM(block) for block in _cert_blocks(f.read())]
            )
    return ssl.optionsForClientTLS(host, trustRoot=trust)


def _cert_blocks(pem: bytes) -> list[bytes]:
    end = b"-----END CERTIFICATE-----"
    return [p + end for p in pem.split(end) if b"-----BEGIN CERTIFICATE-----" in p]


@defer.inlineCallbacks
def deliver(
    reactor: Any,
    candidates: list[Candidate],
    settings: Settings,
    jobs: list[Job],
) -> Any:
    """Try ``candidates`` in order until one holds an SMTP session, and send ``jobs`` there.

    Fires with an ``Attempt``; every job's ``outcomes`` is complete afterwards."""
    errors: list[str] = []
    # Outcomes the caller already has (a job finished elsewhere) survive a failed candidate:
    # only what this call added is forgotten before the next try, or it would be sent twice.
    before = [dict(job.outcomes) for job in jobs]
    for candidate in candidates:
        host, port, tls_name = candidate.ip, candidate.port, candidate.name
        remote = f"{tls_name}[{host}]:{port}" if tls_name != host else f"[{host}]:{port}"
        attempt = yield _connect_once(reactor, host, port, tls_name, settings, jobs, remote)
        if attempt.tls_failed and settings.security == "starttls":
            plain = _plain(settings)
            if plain is not None:  # opportunistic TLS failed: plain text, new connection
                log.info(
                    "{remote}: STARTTLS failed ({why}), retrying in plain text",
                    remote=remote,
                    why=attempt.error,
                )
                _reset(jobs, before)
                attempt = yield _connect_once(reactor, host, port, tls_name, plain, jobs, remote)
        if attempt.connected:
            return attempt
        errors.append(f"{remote}: {attempt.error}")
        _reset(jobs, before)
    why = "; ".join(errors) or "no address to connect to"
    for job in jobs:
        job.finish_all(Outcome("tempfail", 0, why, ""))
    return Attempt(False, "", why)


def _plain(settings: Settings) -> Settings | None:
    if settings.username and not settings.allow_plaintext_auth:
        return None  # never send the password in plain text
    return replace(settings, security="none")


def _reset(jobs: list[Job], before: list[dict[str, Outcome]]) -> None:
    for job, outcomes in zip(jobs, before, strict=True):
        job.outcomes.clear()
        job.outcomes.update(outcomes)


def _connect_once(
    reactor: Any,
    host: str,
    port: int,
    tls_name: str,
    settings: Settings,
    jobs: list[Job],
    remote: str,
) -> defer.Deferred:
    security = settings.security
    wants_tls = security != "none" or bool(settings.username and not settings.allow_plaintext_auth)
    context = client_context(settings, tls_name) if wants_tls else None
    factory = SenderFactory(jobs, settings, None if security == "ssl" else context, remote)
    if security == "ssl":
        reactor.connectSSL(host, port, factory, context, timeout=settings.connect_timeout)
    else:
        reactor.connectTCP(host, port, factory, timeout=settings.connect_timeout)
    return factory.finished
