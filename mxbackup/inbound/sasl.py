"""AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms.

Pitfall 4: offered and accepted only over TLS and only when accounts are configured; a
malformed response (bad base64, wrong shape, over-long line) is answered with 501 and ends the
exchange, never an exception.  The password check is injected (``factory.check_password``,
a Deferred: bcrypt runs in a thread).
"""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.python.failure import Failure

from mxbackup import replies
from mxbackup.replies import Reply

if TYPE_CHECKING:
    from twisted.internet.defer import Deferred

    from mxbackup.inbound.session import Session

log = Logger(namespace="mxbackup.smtp_in")

MAX_AUTH_LINE = 12288  # octets of one SASL response line (RFC 4954 4)


class Sasl:
    """The AUTH command and the exchange that follows it, one line at a time."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.exchange: Exchange | None = None

    def offered(self) -> bool:
        s = self.session
        return bool(s.policy.accounts) and s.tls and not s.authenticated

    def _refusal(self) -> Reply | None:
        s = self.session
        if not s.policy.accounts:
            return replies.AUTH_NOT_AVAILABLE
        if not s.tls:
            return replies.AUTH_NEEDS_TLS
        if s.authenticated:
            return replies.AUTH_ALREADY
        if s.transaction is not None:
            return replies.AUTH_IN_TRANSACTION
        if s.factory.auth_failures.blocked(s.client_ip):
            return replies.AUTH_TOO_MANY_FAILURES
        return None

    def command(self, rest: str) -> Deferred[Any] | None:
        s = self.session
        refusal = self._refusal()
        if refusal is not None:
            s.error(refusal)
            return None
        mechanism, _, initial = rest.partition(" ")
        mechanism = mechanism.upper()
        if mechanism not in ("PLAIN", "LOGIN"):
            s.error(replies.AUTH_MECHANISM)
            return None
        self.exchange = Exchange(mechanism)
        s.read_lines(MAX_AUTH_LINE, self.step, self._too_long)
        if initial:
            return self.step(initial.encode("ascii"))
        s.reply(replies.AUTH_CHALLENGE.format(self.exchange.challenge()))
        return None

    def step(self, line: bytes) -> Deferred[Any] | None:
        exchange = self.exchange
        assert exchange is not None
        if line.strip() == b"*":
            return self._done(replies.AUTH_ABORTED)
        try:
            decoded = b"" if line.strip() == b"=" else base64.b64decode(line, validate=True)
        except (binascii.Error, ValueError):
            return self._done(replies.AUTH_BAD_BASE64)
        try:
            credentials = exchange.respond(decoded)
        except ValueError:
            return self._done(replies.AUTH_MALFORMED)
        if credentials is None:
            self.session.reply(replies.AUTH_CHALLENGE.format(exchange.challenge()))
            return None
        username, password = credentials
        s = self.session
        if s.factory.auth_failures.blocked(s.client_ip):  # failures on other connections
            return self._done(replies.AUTH_TOO_MANY_FAILURES)
        d = s.factory.check_password(username, password)
        return d.addCallbacks(self._checked, self._check_failed, callbackArgs=(username,))

    def _checked(self, ok: bool, username: str) -> None:
        s = self.session
        if ok:
            s.authenticated = True
            s.auth_user = username
            log.info("authenticated user={user} client={ip}", user=username, ip=s.client_ip)
            self._done(replies.AUTH_OK)
        else:
            log.info("authentication failed user={user} client={ip}", user=username, ip=s.client_ip)
            s.factory.auth_failures.failed(s.client_ip)
            self._done(replies.AUTH_FAILED)

    def _check_failed(self, failure: Failure) -> None:
        log.failure("password check failed client={ip}", failure, ip=self.session.client_ip)
        self._done(replies.LOCAL_ERROR)

    def _too_long(self) -> None:
        self._done(replies.AUTH_MALFORMED)

    def _done(self, reply: Reply) -> None:
        self.exchange = None
        self.session.read_commands()
        if reply.code >= 400:
            self.session.error(reply)
        else:
            self.session.reply(reply)


class Exchange:
    """The challenge/response steps of one AUTH PLAIN or LOGIN exchange.  Pure."""

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
