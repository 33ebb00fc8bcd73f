"""One delivery attempt: connect to a target and hand over a batch of messages.

``deliver(reactor, candidates, settings, jobs, ready) -> Delivery``, as ``wire/contract.py``
says: candidates are tried in order until one holds an SMTP session (a refused connection, a
421 greeting, a failed required TLS... move on to the next); a failed opportunistic STARTTLS is
retried in plain text on a new connection (never with a password, unless the route allows
plain-text AUTH).  Over that session the jobs go one after another, one transaction per job
carrying all its recipients for this target; ``results[i]`` fires as soon as job ``i``'s
transaction has ended, ``done`` with the ``Attempt`` after all of them.  Jobs are immutable and
nothing the caller gave is changed; the client never calls back into it.

The barrier (``contract.Ready``): ``ready()`` is called once, when the first session is about
to send its first MAIL (connecting, EHLO, STARTTLS and AUTH go on before); MAIL waits for it.
If it fails, no job is sent: each gets a ``tempfail`` with ``tried=False``.  A reply that arrives
meanwhile (an idle 421...) ends the session.  A probe (no jobs) never calls it.

Built on the command core (``commands``), the session opening (``session``) and one
transaction per job (``transaction``); only public Twisted API, the reactor injected (it
connects and runs the reply timer).  It knows no spool beyond the file each job names.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from mxbackup.wire.commands import (
    CommandClient,
    Observers,
    ProtocolError,
    ReplyError,
    ReplyTimeout,
)
from mxbackup.wire.contract import (
    Attempt,
    Candidate,
    Delivery,
    Job,
    JobResult,
    Outcome,
    Ready,
    Settings,
    bind_address,
)
from mxbackup.wire.session import SessionState, describe, open_session
from mxbackup.wire.tls import client_context, wants_tls
from mxbackup.wire.transaction import Closing, Outcomes, send_job

__all__ = ["Attempt", "Job", "deliver"]

log = Logger(namespace="mxbackup.smtp_out")


def deliver(
    reactor: Any,
    candidates: Sequence[Candidate],
    settings: Settings,
    jobs: Sequence[Job],
    ready: Ready,
) -> Delivery:
    """Try ``candidates`` in order until one holds an SMTP session, and send ``jobs`` there."""
    work = Work(jobs, ready)
    done = _deliver(reactor, list(candidates), settings, work)
    done.addErrback(work.internal_error)
    return Delivery(work.results, done)


class Work:
    """The jobs of one ``deliver`` call, and the Deferreds that report on them."""

    def __init__(self, jobs: Sequence[Job], ready: Ready) -> None:
        self.jobs = tuple(jobs)
        self.results: tuple[defer.Deferred[JobResult], ...] = tuple(
            defer.Deferred() for _ in self.jobs
        )
        self._ready = ready
        self._ready_result: Observers | None = None
        for i, job in enumerate(self.jobs):
            if not job.recipients:
                self.finish(i, {})  # nothing left to send

    def unfinished(self) -> list[int]:
        return [i for i, d in enumerate(self.results) if not d.called]

    def finish(self, i: int, outcomes: Outcomes, at_end: bool = False) -> None:
        result = JobResult(self.jobs[i], MappingProxyType(dict(outcomes)), at_end)
        self.results[i].callback(result)

    def finish_all(self, indexes: Sequence[int], outcome: Outcome) -> None:
        """The jobs the session ends without sending (``JobResult.at_end``)."""
        for i in indexes:
            self.finish(i, dict.fromkeys(self.jobs[i].recipients, outcome), at_end=True)

    def ready(self) -> defer.Deferred[str | None]:
        """The barrier: ``None`` once it holds, or why it failed.  ``ready()`` is called once."""
        if self._ready_result is None:
            self._ready_result = result = Observers()
            d = defer.maybeDeferred(self._ready)
            d.addCallbacks(lambda _: result.fire(None), lambda f: result.fire(_why(f)))
        return self._ready_result.when()

    def internal_error(self, failure: Failure) -> Attempt:
        """A local failure (an unreadable ca_file, a bug), not the target: the jobs left are
        tempfailed, not tried, and the ``Attempt`` says ``local_error`` (the scheduler tries
        them again in a minute and leaves the target as it is, as when this raised)."""
        log.failure("delivery failed locally", failure)
        why = f"local: {_why(failure)}"
        self.finish_all(self.unfinished(), Outcome("tempfail", 0, why, "", tried=False))
        return Attempt(False, "", why, broken=True, local_error=True)


def _why(failure: Failure) -> str:
    return str(failure.value) or failure.type.__name__


@defer.inlineCallbacks
def _deliver(
    reactor: Any, candidates: list[Candidate], settings: Settings, work: Work
) -> Generator[Any, Any, Attempt]:
    errors: list[str] = []
    for candidate in candidates:
        host, port, tls_name = candidate.ip, candidate.port, candidate.name
        remote = f"{tls_name}[{host}]:{port}" if tls_name != host else f"[{host}]:{port}"
        attempt = yield _session(reactor, candidate, settings, work, remote)
        plain = _plain(settings)
        if attempt.tls_failed and settings.security == "starttls" and plain is not None:
            # opportunistic TLS failed: plain text, on a new connection
            log.info(
                "{remote}: STARTTLS failed ({why}), retrying in plain text",
                remote=remote,
                why=attempt.error,
            )
            attempt = yield _session(reactor, candidate, plain, work, remote)
        if attempt.connected:
            return attempt
        errors.append(f"{remote}: {attempt.error}")
    why = "; ".join(errors) or "no address to connect to"
    work.finish_all(work.unfinished(), Outcome("tempfail", 0, why, ""))
    return Attempt(False, "", why)


def _plain(settings: Settings) -> Settings | None:
    if settings.username and not settings.allow_plaintext_auth:
        return None  # never send the password in plain text
    return replace(settings, security="none")


class _Factory(protocol.ClientFactory):
    """Builds the one protocol of a connection; ``connected`` fires with it once connected,
    or fails with the reason the connection did not come up."""

    noisy = False  # no "Starting/Stopping factory" lines: each attempt logs its own line

    def __init__(self, clock: Any, settings: Settings) -> None:
        self.clock = clock
        self.settings = settings
        self.connected: defer.Deferred[CommandClient] = defer.Deferred()

    def buildProtocol(self, addr: Any) -> CommandClient:
        proto = CommandClient(self.clock, self.settings.reply_timeout)
        proto.factory = self
        proto.made.when().addCallback(self._made)
        return proto

    def _made(self, proto: CommandClient) -> None:
        if not self.connected.called:
            self.connected.callback(proto)

    def clientConnectionFailed(self, connector: Any, reason: Failure) -> None:
        if not self.connected.called:
            self.connected.errback(reason)

    def clientConnectionLost(self, connector: Any, reason: Failure) -> None:
        self.clientConnectionFailed(connector, reason)  # lost before it was made: failed


def _connect(
    reactor: Any, candidate: Candidate, settings: Settings, context: Any
) -> defer.Deferred[CommandClient]:
    factory = _Factory(reactor, settings)
    timeout = settings.connect_timeout
    bind = bind_address(settings.source_address, candidate.ip)
    if settings.security == "ssl":
        reactor.connectSSL(
            candidate.ip, candidate.port, factory, context, timeout=timeout, bindAddress=bind
        )
    else:
        reactor.connectTCP(candidate.ip, candidate.port, factory, timeout=timeout, bindAddress=bind)
    return factory.connected


@defer.inlineCallbacks
def _session(
    reactor: Any, candidate: Candidate, settings: Settings, work: Work, remote: str
) -> Generator[Any, Any, Attempt]:
    """One connection.  When it held an SMTP session every job is finished at its end (the
    ones it could not send tempfailed); when it did not, none is (the next candidate may)."""
    context = client_context(settings, candidate.name) if wants_tls(settings) else None
    state = SessionState(remote, tls=context)
    try:
        proto = yield _connect(reactor, candidate, settings, context)
    except Exception as e:  # noqa: BLE001 - every reason is the candidate's error
        return Attempt(False, remote, describe(e, "connect", context))
    ended: Exception | None = None
    try:
        starttls = None if settings.security == "ssl" else context
        extensions = yield open_session(proto, state, settings, starttls)
        yield _send_jobs(proto, state, extensions, work)
    except Exception as e:  # noqa: BLE001 - whatever ends the session is its error
        ended = e
        state.fail(e)
    yield _quit(proto, state, ended)
    return _end(state, work)


@defer.inlineCallbacks
def _send_jobs(
    proto: CommandClient, state: SessionState, extensions: Any, work: Work
) -> Generator[Any, Any, None]:
    if not work.unfinished():
        return
    why = yield _wait_ready(proto, work)
    if why is not None:
        untried = Outcome("tempfail", 0, f"local: {why}", state.remote, tried=False)
        work.finish_all(work.unfinished(), untried)
        return
    for i in work.unfinished():
        if state.in_transaction:
            yield _rset(proto, state)
        state.started_jobs.add(i)
        try:
            outcomes = yield send_job(proto, state, work.jobs[i], extensions)
        except Closing as e:
            if e.outcomes is not None:
                work.finish(i, e.outcomes)
                state.stage = "mail"
            elif state.stage == "mail":
                state.started_jobs.discard(i)  # 421 to its MAIL: it was not tried
            raise
        work.finish(i, outcomes)
        # between transactions (RSET, QUIT) errors read "mail: ...", as they did with Twisted
        state.stage = "mail"
    if state.in_transaction:
        yield _rset(proto, state)


@defer.inlineCallbacks
def _rset(proto: CommandClient, state: SessionState) -> Generator[Any, Any, None]:
    """The transaction is open (MAIL accepted, no final reply): RSET.  A target that refuses
    it cannot be trusted with the next message: the session ends."""
    reply = yield proto.send(b"RSET")[0]
    state.in_transaction = False
    if not reply.ok:
        raise Closing(reply)


@defer.inlineCallbacks
def _wait_ready(proto: CommandClient, work: Work) -> Generator[Any, Any, str | None]:
    """Wait for the barrier; a reply meanwhile, or the connection's end, ends the session."""
    first: defer.Deferred[tuple[str, Any]] = defer.Deferred()

    def fire(result: Any, what: str) -> None:
        if not first.called:
            first.callback((what, result))

    work.ready().addCallback(fire, "ready")
    proto.unasked.when().addCallback(fire, "unasked")
    proto.lost.when().addCallback(fire, "lost")
    what, result = yield first
    if what == "unasked":
        raise ReplyError(result)
    if what == "lost":
        raise result
    return result


@defer.inlineCallbacks
def _quit(
    proto: CommandClient, state: SessionState, exc: Exception | None
) -> Generator[Any, Any, None]:
    """QUIT when the session can still talk, then wait for the connection to go (at most a
    reply timeout after it was closed: the core aborts it then)."""
    if isinstance(exc, ReplyTimeout | ProtocolError):
        if proto.alive:  # the core aborted already: a stalled target never reads our QUIT
            proto.abort()
    elif proto.alive and (state.stage == "greeting" or proto.awaiting):
        # A refused greeting: closed at once, no QUIT (as Twisted did), the next candidate
        # is tried.  Replies still due (a 421 inside a pipelined group): a QUIT would be read
        # out of turn, as message data after a 354; the target is closing anyway.
        proto.close()
    elif proto.alive:
        try:
            yield proto.send(b"QUIT")[0]
            state.quit_acked = True
        except Exception as e:  # noqa: BLE001
            state.fail(e)
        if proto.alive:
            proto.close()
    reason = yield proto.lost.when()
    if not state.quit_acked:
        state.fail(reason)


def _end(state: SessionState, work: Work) -> Attempt:
    """The session's ``Attempt``; if it held an SMTP session, every job still unfinished gets
    its outcome: tempfail, and not tried when its MAIL was never sent in a session that was
    up and ended (a lost connection, a timeout, a 421).  A connection that never came up, or
    a target that refused us outright (AUTH...), counts as a try."""
    tls_failed = state.tls_broken
    connected = state.started and not tls_failed
    left = work.unfinished()
    # A probe (no jobs) proves the target usable only by a clean end: QUIT answered.
    broken = state.refused or bool(left) or (not work.jobs and not state.quit_acked)
    if connected and left:
        why = state.error or f"{state.stage}: the session ended"
        pending = Outcome("tempfail", 0, why, state.remote)
        untried = replace(pending, tried=False) if not state.refused else pending
        for i in left:
            work.finish_all([i], pending if i in state.started_jobs else untried)
    return Attempt(connected, state.remote, state.error, tls_failed, broken)


# Shared with recipient callouts (``mxbackup.wire.callout``): the same connection and TLS rules.
connect = _connect
plain_settings = _plain
