"""One mail transaction for one job: MAIL, RCPT for each recipient, DATA, the message.

With PIPELINING (RFC 2920) MAIL, every RCPT and DATA go out in one write and their replies are
read in order; without it, one command, one reply.  SIZE and BODY=8BITMIME go on MAIL when the
target offers them (pitfall 13).  The outcome, one per recipient:

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

from mxbackup.wire.body import send_body
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


def mail_command(job: Job, extensions: Extensions) -> bytes:
    params = b""
    if b"SIZE" in extensions:
        params += b" SIZE=%d" % job.size
    if job.eight_bit and b"8BITMIME" in extensions:
        params += b" BODY=8BITMIME"
    return b"MAIL FROM:<" + job.sender.encode() + b">" + params


def rcpt_commands(job: Job) -> list[bytes]:
    return [b"RCPT TO:<" + rcpt.encode() + b">" for rcpt in job.recipients]


@defer.inlineCallbacks
def send_job(
    proto: CommandClient, state: SessionState, job: Job, extensions: Extensions
) -> Generator[Any, Any, Outcomes]:
    """The job's transaction; its outcomes.  Raises what ends the session."""
    state.stage = "mail"
    if b"PIPELINING" in extensions:
        mail, rcpts, data = yield _pipelined(proto, state, job, extensions)
    else:
        mail, rcpts, data = yield _serial(proto, state, job, extensions)
    accepted = any(r.ok for r in rcpts)
    if data is not None and data.code == 354 and mail.ok and accepted:
        state.in_transaction = False  # the reply to the end of data closes it, whatever it is
        final = yield send_body(proto, job.path, job.size)
        return _fate(job, state, mail, rcpts, _check(final))
    if data is not None and data.code == 354:
        # RFC 2920 3.1: DATA accepted although nothing can be delivered: the lone dot
        state.in_transaction = False
        dot = yield ask(proto, b".")
        outcomes = _fate(job, state, mail, rcpts, dot)
        if dot.code == 421:
            raise Closing(dot, outcomes)
        return outcomes
    return _fate(job, state, mail, rcpts, data or mail)


@defer.inlineCallbacks
def _pipelined(
    proto: CommandClient, state: SessionState, job: Job, extensions: Extensions
) -> Generator[Any, Any, tuple[Reply, list[Reply], Reply]]:
    waits = proto.send(mail_command(job, extensions), *rcpt_commands(job), b"DATA")
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
    proto: CommandClient, state: SessionState, job: Job, extensions: Extensions
) -> Generator[Any, Any, tuple[Reply, list[Reply], Reply | None]]:
    mail = _check((yield ask(proto, mail_command(job, extensions))))
    if not mail.ok:
        return mail, [], None
    state.in_transaction = True
    state.stage = "rcpt"
    rcpts = []
    for line in rcpt_commands(job):
        rcpts.append(_check((yield ask(proto, line))))
    if not any(r.ok for r in rcpts):
        return mail, rcpts, None
    state.stage = "data"
    data = _check((yield ask(proto, b"DATA")))
    return mail, rcpts, data


def _fate(job: Job, state: SessionState, mail: Reply, rcpts: list[Reply], last: Reply) -> Outcomes:
    """Each recipient's outcome: the MAIL reply when it was refused, else its own refusal or
    ``last`` (the reply to the end of data, or to a refused DATA)."""
    if not mail.ok:
        return {rcpt: _outcome(mail, state) for rcpt in job.recipients}
    replies: Mapping[str, Reply] = dict(zip(job.recipients, rcpts, strict=True))
    return {
        rcpt: _outcome(last, state) if r.ok else replace(_outcome(r, state), at_rcpt=True)
        for rcpt, r in replies.items()
    }


def _outcome(reply: Reply, state: SessionState) -> Outcome:
    return Outcome(classify(reply.code), reply.code, reply.text, state.remote)
