"""Recipient callouts: ask a route's target whether it would take a recipient, without ever
leaving a message there: greeting, EHLO, STARTTLS, AUTH (the delivery client's own code and
rules: ``session.open_session``, ``client.connect``, ``tls``), then MAIL FROM ``sender``,
RCPT TO, and RSET; never DATA.

``Callouts.verify(route, address)`` fires with a ``CalloutAnswer`` and never fails:

- ``accepted``: a 2xx to RCPT;
- ``refused``: a 5xx to RCPT (its code and text);
- ``unreachable``: anything else: no target, no connection, a refused greeting/EHLO/AUTH/MAIL,
  a 4xx, a timeout.  The whole callout (all targets, in order) has ``timeout`` seconds.

After the RSET the connection is kept (``IDLE_LIMIT`` seconds, at most ``MAX_IDLE`` per
target) for the next callout to that target, as Postfix's verify service does; a kept
connection that turns out closed when reused is replaced once by a new one.  The targets come
from an injected ``candidates(route)`` (the next hop's resolution of the route's targets), so
this module knows no DNS and nothing of the outbound side.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import Any, Literal

from twisted.internet import defer
from twisted.logger import Logger

from mxbackup.config import Route
from mxbackup.wire import params
from mxbackup.wire.client import connect, plain_settings
from mxbackup.wire.commands import CommandClient, Reply
from mxbackup.wire.contract import Candidate, Settings
from mxbackup.wire.session import Extensions, SessionState, describe, open_session
from mxbackup.wire.tls import client_context, wants_tls

log = Logger(namespace="mxbackup.callout")

IDLE_LIMIT = 30.0  # seconds a connection is kept for the next callout
MAX_IDLE = 4  # connections kept per target

Kind = Literal["accepted", "refused", "unreachable"]


@dataclass(frozen=True)
class CalloutAnswer:
    kind: Kind
    code: int = 0
    text: str = ""  # the target's reply text, or why it could not be asked
    remote: str = ""


Candidates = Callable[[Route], defer.Deferred]  # -> Deferred[list[Candidate]]


@dataclass(eq=False)
class _Conn:
    proto: CommandClient
    extensions: Extensions
    remote: str
    key: tuple
    timer: Any = None
    reused: bool = False  # taken from the kept connections (it may have gone meanwhile)


@dataclass
class _Run:
    """One callout in progress: the connection it uses now (aborted at the deadline)."""

    proto: CommandClient | None = None
    expired: bool = False


class Callouts:
    def __init__(self, reactor: Any, candidates: Candidates, helo_name: str) -> None:
        self.reactor = reactor
        self.candidates = candidates
        self.helo_name = helo_name
        self._idle: dict[tuple, list[_Conn]] = {}
        self.connections_made = 0

    # -- the interface -------------------------------------------------------------------
    def verify(self, route: Route, address: str) -> defer.Deferred:
        vr = route.verify_recipients
        timeout = vr.timeout if vr is not None else 10.0
        sender = vr.sender if vr is not None else ""
        settings = Settings.for_route(
            route, self.helo_name, connect_timeout=timeout, reply_timeout=timeout
        )
        result: defer.Deferred = defer.Deferred()
        run = _Run()

        def deliver(answer: Any) -> None:
            if timer.active():
                timer.cancel()
            if not result.called:
                if not isinstance(answer, CalloutAnswer):
                    log.failure("callout failed locally", answer)
                    answer = CalloutAnswer("unreachable", 0, "local error")
                result.callback(answer)

        def expire() -> None:
            run.expired = True
            if run.proto is not None and run.proto.alive:
                run.proto.abort()
            if not result.called:
                result.callback(CalloutAnswer("unreachable", 0, f"no answer within {timeout:g} s"))

        timer = self.reactor.callLater(timeout, expire)
        self._run(route, settings, sender, address, run).addBoth(deliver)
        return result

    def close(self) -> None:
        """QUIT every kept connection (at shutdown)."""
        for conns in list(self._idle.values()):
            for conn in list(conns):
                self._drop(conn, quit=True)

    def idle_count(self) -> int:
        return sum(len(conns) for conns in self._idle.values())

    # -- one callout ---------------------------------------------------------------------
    @defer.inlineCallbacks
    def _run(
        self, route: Route, settings: Settings, sender: str, address: str, run: _Run
    ) -> Generator[Any, Any, CalloutAnswer]:
        try:
            candidates = yield self.candidates(route)
        except Exception as e:  # noqa: BLE001 - a target that cannot be found is unreachable
            return CalloutAnswer("unreachable", 0, f"no address for the targets: {e}")
        errors = []
        for candidate in candidates:
            if run.expired:
                break
            conn, why = yield self._session(candidate, settings, run)
            if conn is None:
                errors.append(why)
                continue
            answer = yield self._ask(conn, sender, address, run)
            if answer is None:  # a kept connection had gone: once more on a new one
                conn, why = yield self._session(candidate, settings, run, reuse=False)
                if conn is None:
                    errors.append(why)
                    continue
                answer = yield self._ask(conn, sender, address, run)
            return answer or CalloutAnswer("unreachable", 0, "connection lost", conn.remote)
        return CalloutAnswer("unreachable", 0, "; ".join(errors) or "no target to ask")

    @defer.inlineCallbacks
    def _session(
        self, candidate: Candidate, settings: Settings, run: _Run, reuse: bool = True
    ) -> Generator[Any, Any, tuple[_Conn | None, str]]:
        key = (candidate, settings)
        if reuse:
            conn = self._take(key)
            if conn is not None:
                run.proto = conn.proto
                return conn, ""
        remote = f"[{candidate.ip}]:{candidate.port}"
        conn, state = yield self._open(candidate, settings, run, key, remote)
        plain = plain_settings(settings)
        if conn is None and state.tls_broken and settings.security == "starttls" and plain:
            conn, state = yield self._open(candidate, plain, run, key, remote)
        return conn, state.error

    @defer.inlineCallbacks
    def _open(
        self, candidate: Candidate, settings: Settings, run: _Run, key: tuple, remote: str
    ) -> Generator[Any, Any, tuple[_Conn | None, SessionState]]:
        state = SessionState(remote)
        try:
            context = client_context(settings, candidate.name) if wants_tls(settings) else None
            proto = yield connect(self.reactor, candidate, settings, context)
        except Exception as e:  # noqa: BLE001 - every reason is the candidate's error
            state.fail(e)
            return None, state
        self.connections_made += 1
        run.proto = proto
        try:
            starttls = None if settings.security == "ssl" else context
            extensions = yield open_session(proto, state, settings, starttls)
        except Exception as e:  # noqa: BLE001 - whatever ends the session is its error
            state.fail(e)
            if proto.alive:
                proto.abort()
            return None, state
        conn = _Conn(proto, extensions, remote, key)
        proto.lost.when().addCallback(lambda _: self._forget(conn))
        return conn, state

    @defer.inlineCallbacks
    def _ask(
        self, conn: _Conn, sender: str, address: str, run: _Run
    ) -> Generator[Any, Any, CalloutAnswer | None]:
        """MAIL, RCPT (pipelined when offered), then RSET in the background.  None: the kept
        connection was closed before it answered anything."""
        proto, remote = conn.proto, conn.remote
        utf8 = not (sender + address).isascii()
        if utf8 and b"SMTPUTF8" not in conn.extensions:
            # U-label domains go as A-labels; a UTF-8 local part cannot be asked about
            plain_sender, plain_address = params.ascii_form(sender), params.ascii_form(address)
            if plain_sender is None or plain_address is None:
                self._release(conn)
                return CalloutAnswer("unreachable", 0, "the target does not offer SMTPUTF8", remote)
            sender, address, utf8 = plain_sender, plain_address, False
        mail = b"MAIL FROM:<" + sender.encode() + b">" + (b" SMTPUTF8" if utf8 else b"")
        rcpt = b"RCPT TO:<" + address.encode() + b">"
        mail_reply: Reply | None = None
        try:
            if b"PIPELINING" in conn.extensions:
                mail_d, rcpt_d = proto.send(mail, rcpt)
                mail_reply = yield mail_d
                rcpt_reply = yield rcpt_d
            else:
                mail_reply = yield proto.send(mail)[0]
                rcpt_reply = (yield proto.send(rcpt)[0]) if mail_reply.ok else None
        except Exception as e:  # noqa: BLE001 - a lost connection, a timeout
            if proto.alive:
                proto.abort()
            if mail_reply is None and conn.reused and not run.expired:
                return None
            return CalloutAnswer("unreachable", 0, describe(e, "rcpt"), remote)
        answer = _answer(mail_reply, rcpt_reply, remote)
        if (
            mail_reply.ok
            and mail_reply.code != 421
            and (rcpt_reply is None or rcpt_reply.code != 421)
        ):
            self._reset(conn, run)
        elif proto.alive:
            proto.close()
        return answer

    # -- kept connections ----------------------------------------------------------------
    def _take(self, key: tuple) -> _Conn | None:
        conns = self._idle.get(key)
        while conns:
            conn = conns.pop()
            if conn.timer is not None and conn.timer.active():
                conn.timer.cancel()
            if conn.proto.alive:
                conn.reused = True
                return conn
        return None

    def _reset(self, conn: _Conn, run: _Run) -> None:
        """RSET, and keep the connection at once: the next callout's MAIL follows the RSET on
        the wire (replies come in order).  A refused RSET closes it (the next user then finds
        it gone and takes a new one)."""
        if run.expired:
            conn.proto.close()
            return

        def check(reply: Reply) -> None:
            if not reply.ok and conn.proto.alive:
                conn.proto.close()

        conn.proto.send(b"RSET")[0].addCallbacks(check, lambda _: None)
        self._release(conn)

    def _release(self, conn: _Conn) -> None:
        """Keep ``conn`` for the next callout to its target (or QUIT it, if enough are kept)."""
        conns = self._idle.setdefault(conn.key, [])
        if len(conns) >= MAX_IDLE or not conn.proto.alive:
            self._drop(conn, quit=True)
            return
        conns.append(conn)
        conn.timer = self.reactor.callLater(IDLE_LIMIT, self._drop, conn, True)

    def _forget(self, conn: _Conn) -> None:
        conns = self._idle.get(conn.key)
        if conns and conn in conns:
            conns.remove(conn)
        if conn.timer is not None and conn.timer.active():
            conn.timer.cancel()

    def _drop(self, conn: _Conn, quit: bool) -> None:
        self._forget(conn)
        if conn.proto.alive and quit:
            conn.proto.send(b"QUIT")[0].addErrback(lambda _: None)
            conn.proto.close()


def _answer(mail: Reply, rcpt: Reply | None, remote: str) -> CalloutAnswer:
    if not mail.ok:
        return CalloutAnswer("unreachable", mail.code, f"MAIL refused: {mail.text}", remote)
    assert rcpt is not None
    if rcpt.ok:
        return CalloutAnswer("accepted", rcpt.code, rcpt.text, remote)
    if 500 <= rcpt.code < 600:
        return CalloutAnswer("refused", rcpt.code, rcpt.text, remote)
    return CalloutAnswer("unreachable", rcpt.code, rcpt.text, remote)
