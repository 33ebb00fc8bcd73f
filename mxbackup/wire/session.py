"""Opening an SMTP session as a client: greeting, EHLO (HELO fallback), STARTTLS, AUTH.

Driven with ``inlineCallbacks`` on the command core (``mxbackup.wire.commands``); a step that
cannot go on raises, and ``SessionState.fail`` turns the first exception into the session's
error text (``"<stage>: ..."``, read by operators and asserted by tests) and its flags: a TLS
failure (the caller may retry in plain text), a refusal (the target answered, and said no:
the try counts, and the target is not usable as it is).

What the route asks (pitfall 12): TLS and AUTH are required only when it says so; the password
never goes out in plain text unless ``allow_plaintext_auth``; a server that does not offer
STARTTLS gets plain text unless TLS is required.
"""

from __future__ import annotations

import base64
from collections.abc import Generator
from dataclasses import dataclass, field
from typing import Any

from OpenSSL import SSL
from service_identity import VerificationError
from twisted.internet import defer, error
from twisted.internet.interfaces import ISSLTransport

from mxbackup.wire.commands import CommandClient, ProtocolError, Reply, ReplyError, ReplyTimeout
from mxbackup.wire.contract import Settings
from mxbackup.wire.tls import needs_tls

Extensions = dict[bytes, bytes | None]


class TLSRequired(Exception):
    """The route needs TLS and the target does not offer STARTTLS."""


class NoAuthMechanism(Exception):
    """The route has credentials and the target offers no mechanism we use."""


@dataclass
class SessionState:
    """How far one connection got; what the ``Attempt`` and the outcomes are made of."""

    remote: str
    stage: str = "connect"  # connect | greeting | ehlo | starttls | auth | mail | rcpt | data
    started: bool = False  # EHLO (or HELO) was answered: the target talks SMTP with us
    tls_started: bool = False  # STARTTLS accepted, handshake under way
    tls_done: bool = False  # EHLO answered inside TLS: the handshake worked
    tls_failed: bool = False
    refused: bool = False  # the target said no before any MAIL (AUTH, EHLO...)
    quit_acked: bool = False  # the target answered our QUIT
    in_transaction: bool = False  # MAIL accepted, final reply to the data not read
    error: str = ""
    tls: Any = None  # the verifying TLS options (``tls.Checked``): what the handshake showed
    started_jobs: set[int] = field(default_factory=set)  # their MAIL was sent (and not 421'd)

    def fail(self, exc: BaseException) -> None:
        """Something ended the session; the first error is its cause."""
        if not self.error:
            self.error = describe(exc, self.stage, self.tls)
        if self.stage == "starttls" or isinstance(exc, TLSRequired):
            # TLS was refused, failed, or is required and not offered: this target cannot
            # take the mail as the route wants it (the next candidate may)
            self.tls_failed = True
        if self.stage in ("greeting", "ehlo", "auth") and refusal(exc):
            self.refused = True

    @property
    def tls_broken(self) -> bool:
        """A handshake that fails ends the connection without a reply; one that works is
        followed by an EHLO answer inside TLS.  Anything later (AUTH...) is no TLS failure."""
        return self.tls_failed or (self.tls_started and not self.tls_done)


def refusal(exc: BaseException) -> bool:
    """A "no" from the target (not a lost connection, a timeout or a 421)."""
    if isinstance(exc, NoAuthMechanism):
        return True
    return isinstance(exc, ReplyError) and exc.reply.code != 421


def describe(exc: BaseException, stage: str, tls: Any = None) -> str:
    """The reason an operator reads (queue list, the log): which step failed, and why."""
    explain = getattr(tls, "explain", None)
    if explain is not None and isinstance(exc, VerificationError | SSL.Error):
        return f"{stage}: TLS " + explain(_tls_failure(exc, tls.host))
    if isinstance(exc, error.TimeoutError | ReplyTimeout):
        return f"{stage}: timed out"
    if isinstance(exc, TLSRequired):
        return f"{stage}: the target does not offer STARTTLS, and the route needs TLS"
    if isinstance(exc, NoAuthMechanism):
        return f"{stage}: the target offers no AUTH mechanism we can use (PLAIN, LOGIN)"
    if isinstance(exc, VerificationError):
        return f"{stage}: TLS certificate not valid for the target's name"
    if isinstance(exc, SSL.Error):
        reasons = [r[-1] for r in (exc.args[0] if exc.args else []) if isinstance(r, tuple) and r]
        return f"{stage}: TLS failed: {'; '.join(reasons) or exc}"
    if isinstance(exc, ReplyError):
        return f"{stage}: {exc.reply.code} {exc.reply.text}".strip()
    if isinstance(exc, ProtocolError):
        return f"{stage}: {exc}"
    if isinstance(exc, error.ConnectionDone) and stage != "connect":
        return f"{stage}: connection closed by the target"
    return f"{stage}: {exc.__class__.__name__}: {exc}".rstrip(": ")


def _tls_failure(exc: BaseException, host: str) -> str:
    if isinstance(exc, VerificationError):
        return f"certificate not valid for the target's name (hostname mismatch: {host})"
    reasons = [r[-1] for r in (exc.args[0] if exc.args else []) if isinstance(r, tuple) and r]
    return f"handshake failed: {'; '.join(reasons) or exc}"


@defer.inlineCallbacks
def open_session(
    proto: CommandClient, state: SessionState, settings: Settings, context: Any
) -> Generator[Any, Any, Extensions]:
    """Greeting, EHLO, STARTTLS (with ``context``, when not on TLS already), EHLO, AUTH: the
    target's extensions once it may take a MAIL.  Raises what ends the session."""
    state.stage = "greeting"
    greeting = yield proto.expect()
    if not greeting.ok:
        raise ReplyError(greeting)
    extensions = yield hello(proto, state, settings)
    if not ISSLTransport.providedBy(proto.transport):
        if context is not None and b"STARTTLS" in extensions:
            extensions = yield starttls(proto, state, settings, context)
        elif needs_tls(settings):
            raise TLSRequired()
    # "auth" from here to the first MAIL, with or without credentials: what ends the session
    # meanwhile (the target hangs up, an idle 421) reads "auth: ..." as it did with Twisted,
    # which went through its authenticate step after every EHLO
    state.stage = "auth"
    if settings.username:
        yield authenticate(proto, state, settings, extensions)
    return extensions


@defer.inlineCallbacks
def hello(
    proto: CommandClient, state: SessionState, settings: Settings
) -> Generator[Any, Any, Extensions]:
    """EHLO; when it is refused, HELO where the route allows a session without extensions
    (no TLS, no AUTH needed).  A refused HELO ends the session (Twisted's sent HELO for ever)."""
    name = settings.helo_name.encode()
    reply = yield ask(proto, b"EHLO " + name)
    if not reply.ok:
        if reply.code == 421 or needs_tls(settings) or settings.username:
            raise ReplyError(reply)
        reply = yield ask(proto, b"HELO " + name)
        if not reply.ok:
            raise ReplyError(reply)
        state.started = True
        state.stage = "ehlo"
        return {}
    state.started = True
    state.stage = "ehlo"
    return extensions_of(reply)


def ask(proto: CommandClient, line: bytes) -> defer.Deferred[Reply]:
    """One command, its reply."""
    return proto.send(line)[0]


def extensions_of(reply: Reply) -> Extensions:
    """The EHLO reply's keywords (upper case) and their parameters; the first line is the
    server's name."""
    items: Extensions = {}
    for line in reply.lines[1:]:
        word, _, value = line.partition(b" ")
        items[word.upper()] = value or None
    return items


@defer.inlineCallbacks
def starttls(
    proto: CommandClient, state: SessionState, settings: Settings, context: Any
) -> Generator[Any, Any, Extensions]:
    """RFC 3207: STARTTLS, the handshake, EHLO again (everything learnt before is forgotten)."""
    state.stage = "starttls"
    reply = yield ask(proto, b"STARTTLS")
    if reply.code != 220:
        raise ReplyError(reply)
    if proto.clearLineBuffer():
        # Plain text after the 220 would be read as if it came inside TLS (a forged EHLO
        # reply...): the response injection of CVE-2011-0411, client side.
        proto.abort()
        raise ProtocolError("data after the reply to STARTTLS, before the TLS handshake")
    state.tls_started = True
    proto.transport.startTLS(context)
    extensions = yield hello(proto, state, settings)
    state.tls_done = True
    return extensions


@defer.inlineCallbacks
def authenticate(
    proto: CommandClient, state: SessionState, settings: Settings, extensions: Extensions
) -> Generator[Any, Any, None]:
    """AUTH PLAIN (RFC 4616, no authorization identity) or LOGIN, in that order of preference."""
    offered = (extensions.get(b"AUTH") or b"").upper().split()
    user = (settings.username or "").encode()
    password = (settings.password or "").encode()
    if b"PLAIN" in offered:
        reply = yield ask(proto, b"AUTH PLAIN " + _b64(b"\0" + user + b"\0" + password))
    elif b"LOGIN" in offered:
        reply = yield ask(proto, b"AUTH LOGIN")
        for answer in (user, password):
            if reply.code != 334:
                break
            reply = yield ask(proto, _b64(answer))
    else:
        raise NoAuthMechanism()
    if reply.code != 235:
        raise ReplyError(reply)


def _b64(data: bytes) -> bytes:
    return base64.b64encode(data)
