"""One mail transaction for one job: MAIL, RCPT for each recipient, DATA, the message.

With PIPELINING (RFC 2920) MAIL, every RCPT and DATA go out in one write and their replies are
read in order; without it, one command, one reply.  The parameters (SIZE, BODY, SMTPUTF8, the
DSN ones) are ``params``'s.  Before MAIL, what this target cannot take is decided here, without
sending it: recipients that need SMTPUTF8 it lacks (5.6.7), and 8-bit mail it cannot take
(RFC 6152), converted to 7 bit on the way (``sevenbit``) or refused (5.6.3) as the route says.
The outcome, one per recipient:

- MAIL refused: every recipient shares that reply;
- a recipient refused keeps its own RCPT reply;
- the accepted ones get the reply to the end of the data, or to DATA when it is refused;
- 354 although nothing can be delivered (MAIL refused, or no recipient accepted): the lone
  dot of RFC 2920 3.1 is sent, and the replies above decide.

A 421 (RFC 5321 3.8) ends the session: ``ReplyError`` is raised (with ``outcomes`` when the
job's fate is known all the same, after the lone dot).  ``state.in_transaction`` says whether
an RSET is needed before the next MAIL (MAIL accepted, final reply to the data not read): after
a completed transaction there is none (Twisted sends one, a round trip a message).
"""

from __future__ import annotations

from collections.abc import Generator, Mapping
from dataclasses import replace
from typing import Any

from twisted.internet import defer

from mxbackup.wire import params, sevenbit
from mxbackup.wire.body import read_chunks, send_body
from mxbackup.wire.commands import CommandClient, Reply, ReplyError
from mxbackup.wire.contract import Job, Outcome, classify
from mxbackup.wire.session import Extensions, SessionState, ask

Outcomes = dict[str, Outcome]


class Closing(ReplyError):
    """421: the target is closing the session.  ``outcomes``: the job's fate, if known."""

    def __init__(self, reply: Reply, outcomes: Outcomes | None = None) -> None:
        super().__init__(reply)
        self.outcomes = outcomes


def _check(reply: Reply) -> Reply:
    if reply.code == 421:
        raise Closing(reply)
    return reply


def local_decisions(
    job: Job, extensions: Extensions, remote: str
) -> tuple[Job, Outcomes, sevenbit.Plan | None]:
    """What this target cannot take, decided before MAIL: the job left to send (maybe with
    no recipient), the outcomes already decided, and the 7-bit conversion to make, if any.
    The 8-bit check reads the stored file once (a C-speed scan of runs of body lines)."""
    refused = params.utf8_refused(job, extensions, remote)
    if refused:
        left = [i for i, r in enumerate(job.recipients) if r not in refused]
        job = replace(
            job,
            recipients=tuple(job.recipients[i] for i in left),
            notify=tuple(job.rcpt_params(i)[0] for i in left),
            orcpt=tuple(job.rcpt_params(i)[1] for i in left),
        )
    plan = None
    if job.recipients and params.needs_7bit(job, extensions):
        plan = sevenbit.scan(read_chunks(job.path))
        if plan.eight_bit and not job.convert_8bit:
            refused.update(params.eight_bit_refused(job, remote))
            job = replace(job, recipients=(), notify=(), orcpt=())
            plan = None
        elif not plan.needed:
            plan = None  # nothing to change: it goes as it is
    return job, refused, plan


def send_job(
    proto: CommandClient, state: SessionState, job: Job, extensions: Extensions
) -> defer.Deferred[Outcomes]:
    """The job's transaction; its outcomes.  Fails with what ends the session.  (No
    generator of its own: one layer less of Deferred machinery for every message sent.)"""
    state.stage = "mail"
    try:
        job, decided, plan = local_decisions(job, extensions, state.remote)
    except Exception:  # noqa: BLE001 - the caller's, as a failed Deferred
        return defer.fail()
    if not job.recipients:
        return defer.succeed(decided)
    sent = _transaction(proto, state, job, extensions, plan)
    return sent.addCallback(lambda outcomes: {**decided, **outcomes}) if decided else sent


@defer.inlineCallbacks
def _transaction(
    proto: CommandClient,
    state: SessionState,
    job: Job,
    extensions: Extensions,
    plan: sevenbit.Plan | None,
) -> Generator[Any, Any, Outcomes]:
    mail_line = params.mail_command(job, extensions, converted=plan is not None)
    if b"PIPELINING" in extensions:
        mail, rcpts, data = yield _pipelined(proto, state, job, extensions, mail_line)
    else:
        mail, rcpts, data = yield _serial(proto, state, job, extensions, mail_line)
    accepted = any(r.ok for r in rcpts)
    dsn = b"DSN" in extensions
    if data is not None and data.code == 354 and mail.ok and accepted:
        state.in_transaction = False  # the reply to the end of data closes it, whatever it is
        final = yield send_body(proto, job.path, job.size, plan)
        return _fate(job, state, mail, rcpts, _check(final), dsn)
    if data is not None and data.code == 354:
        # RFC 2920 3.1: DATA accepted although nothing can be delivered: the lone dot
        state.in_transaction = False
        dot = yield ask(proto, b".")
        outcomes = _fate(job, state, mail, rcpts, dot, dsn)
        if dot.code == 421:
            raise Closing(dot, outcomes)
        return outcomes
    return _fate(job, state, mail, rcpts, data or mail, dsn)


@defer.inlineCallbacks
def _pipelined(
    proto: CommandClient, state: SessionState, job: Job, extensions: Extensions, mail_line: bytes
) -> Generator[Any, Any, tuple[Reply, list[Reply], Reply]]:
    waits = proto.send(mail_line, *params.rcpt_commands(job, extensions), b"DATA")
    try:
        mail = _check((yield waits[0]))
        state.in_transaction = mail.ok
        state.stage = "rcpt"
        rcpts = []
        for wait in waits[1:-1]:
            rcpts.append(_check((yield wait)))
        state.stage = "data"
        data = _check((yield waits[-1]))
    finally:
        for wait in waits:  # replies left unread when the session ends: nobody needs them
            wait.addErrback(lambda _: None)
    return mail, rcpts, data


@defer.inlineCallbacks
def _serial(
    proto: CommandClient, state: SessionState, job: Job, extensions: Extensions, mail_line: bytes
) -> Generator[Any, Any, tuple[Reply, list[Reply], Reply | None]]:
    mail = _check((yield ask(proto, mail_line)))
    if not mail.ok:
        return mail, [], None
    state.in_transaction = True
    state.stage = "rcpt"
    rcpts = []
    for line in params.rcpt_commands(job, extensions):
        rcpts.append(_check((yield ask(proto, line))))
    if not any(r.ok for r in rcpts):
        return mail, rcpts, None
    state.stage = "data"
    data = _check((yield ask(proto, b"DATA")))
    return mail, rcpts, data


def _fate(
    job: Job, state: SessionState, mail: Reply, rcpts: list[Reply], last: Reply, dsn: bool
) -> Outcomes:
    """Each recipient's outcome: the MAIL reply when it was refused, else its own refusal or
    ``last`` (the reply to the end of data, or to a refused DATA).  ``dsn``: the target was
    given the DSN parameters."""
    if not mail.ok:
        return {rcpt: _outcome(mail, state, dsn) for rcpt in job.recipients}
    replies: Mapping[str, Reply] = dict(zip(job.recipients, rcpts, strict=True))
    return {
        rcpt: _outcome(last, state, dsn) if r.ok else replace(_outcome(r, state, dsn), at_rcpt=True)
        for rcpt, r in replies.items()
    }


def _outcome(reply: Reply, state: SessionState, dsn: bool) -> Outcome:
    return Outcome(classify(reply.code), reply.code, reply.text, state.remote, notify_passed=dsn)
