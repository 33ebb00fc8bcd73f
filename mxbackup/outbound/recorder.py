"""Recording outcomes: what a try did to each recipient, made durable, then the next attempt.

State is per recipient (``Envelope.recipients``): attempts, next attempt, last reply.  Before
a try the new state (attempts + 1, when to retry) is set in memory (``begin``) and noted in the
spool's try log (``queue.tries``); after it, the outcome is written to the envelope
(``record``); a restart resumes from there, the log's tries counted.  A crash between the two
can repeat a delivery (one duplicate), never lose one.  A failed recipient gets its DSN queued
before the envelope is written (a crash then repeats the DSN, never loses it); a message with
nothing pending is removed.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from mxbackup.config import Config
from mxbackup.outbound import dsnpolicy
from mxbackup.outbound.backlog import Backlog
from mxbackup.outbound.health import Health, target_key
from mxbackup.outbound.notify import DsnQueue
from mxbackup.outbound.policy import RetryRule
from mxbackup.queue import tries
from mxbackup.queue.envelope import Envelope, Recipient
from mxbackup.queue.spool import Spool
from mxbackup.queue.spoolproc import SpoolStopping
from mxbackup.stats import Stats
from mxbackup.wire.contract import JobResult, Outcome

log = Logger(namespace="mxbackup.scheduler")  # its lines were the scheduler's: kept as they are
RECORD_RETRY = 60.0  # seconds before a recording the spool refused is tried again

Failed = list[tuple[Recipient, Outcome]]


class Recorder:
    def __init__(
        self,
        backlog: Backlog,
        health: Health,
        spool: Spool,
        dsn: DsnQueue,
        clock: Any,
        stats: Stats,
        config: Config,
    ) -> None:
        self.backlog = backlog
        self.health = health
        self.spool = spool
        self.dsn = dsn
        self.clock = clock
        self.stats = stats
        # Recipient verification learns from delivery (``rcpt_wiring`` sets it): called with
        # (route, address, positive, text) for each RCPT answer of a verified route.
        self.learn: Any = None
        # Messages whose try counts changed in memory only (``fail_untried``): written at a
        # clean stop (``save_counts``), so a restart goes on counting from there.
        self.unsaved: set[str] = set()
        self.left_to_snapshot = 0  # of them, at a clean stop: for its snapshot to carry
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        self.delay_warning = config.delivery.delay_warning
        # Built once per configuration: rule() runs for every message tried.
        self._rules = {r.domain: RetryRule.for_route(r) for r in config.routes}
        self._verified = {
            r.domain: r
            for r in config.routes
            if r.verify_recipients is not None and r.addresses.kind == "all"
        }

    def rule(self, key: str) -> RetryRule:
        return self._rules.get(key) or _MX_RULE

    def begin(self, envelope: Envelope, key: str, rcpts: list[Recipient], now: float) -> None:
        """The try counts before it is made (the caller notes it in the spool's try log
        before connecting): attempts + 1, and when to retry if it fails (0: never)."""
        rule = self.rule(key)
        self.backlog.inflight.sending(rcpts)
        for rcpt in rcpts:
            rcpt.attempts += 1
            rcpt.next_attempt = rule.next_attempt(rcpt.attempts, envelope.received_at, now) or 0.0

    # -- a try's outcome -----------------------------------------------------------------------
    def record(self, key: str, result: JobResult) -> defer.Deferred:
        """Record one job's outcome; a local failure (the envelope cannot be written) leaves
        it for a retry in a minute instead of stuck in flight.  (No generator: this runs
        for every message delivered.)"""
        qid = result.job.qid
        try:
            recorded = self._record(key, result)
        except Exception:  # noqa: BLE001 - as when the Deferred fails
            recorded = defer.fail()

        def failed(failure: Failure) -> None:
            _log_local_failure(failure, "recording the outcome of id={id} failed", id=qid)
            self.backlog.requeue(qid, key, self.clock.seconds() + RECORD_RETRY)

        return recorded.addErrback(failed)

    def _record(self, key: str, result: JobResult) -> defer.Deferred:
        now = self.clock.seconds()
        envelope = self.backlog.envelopes.get(result.job.qid)
        if envelope is None:  # deleted by the operator meanwhile
            self.backlog.inflight.release(result.job.qid, key, None)
            return defer.succeed(None)
        failed: Failed = []
        relayed: Failed = []  # delivered, with a success notice ours to send (``dsnpolicy``)
        untried: list[tuple[int, int]] = []  # tries taken back: noted again (``queue.tries``)
        for i, rcpt in enumerate(envelope.recipients):
            outcome = result.outcomes.get(rcpt.address)
            if rcpt.state == "pending" and target_key(rcpt) == key and outcome is not None:
                self._apply(envelope, rcpt, outcome, key, now, failed)
                if dsnpolicy.success_due(rcpt, outcome):
                    relayed.append((rcpt, outcome))
                if not outcome.tried:
                    untried.append((i, rcpt.attempts))
        if untried:
            self.spool.note_tries([(envelope.id, tuple(untried))], None, now)
        flushed = self.backlog.inflight.release(envelope.id, key, envelope)
        return self._settle_or_retry(envelope, key, failed, now, flushed, relayed)

    def _apply(
        self,
        envelope: Envelope,
        rcpt: Recipient,
        outcome: Outcome,
        key: str,
        now: float,
        failed: Failed,
    ) -> None:
        rcpt.last_reply = outcome.reply
        if not outcome.tried:
            self._untry(envelope, rcpt, key, now)
        self._log_attempt(envelope, rcpt, outcome)
        if self.learn is not None and key in self._verified:
            self._learn(self._verified[key], rcpt.address, outcome)
        if outcome.kind == "delivered":
            rcpt.state = "delivered"
            self.stats.delivered += 1
        elif outcome.kind == "permfail" or rcpt.next_attempt == 0.0:
            rcpt.state = "failed"
            failed.append((rcpt, outcome))
            self.stats.bounced += 1
        else:
            self.stats.deferred += 1

    def _learn(self, route: Any, address: str, outcome: Outcome) -> None:
        """The target took the recipient (a delivery) or refused it at RCPT (5xx): a
        positive or negative verification entry, without a callout."""
        if outcome.kind == "delivered":
            self.learn(route, address, True, "")
        elif outcome.kind == "permfail" and outcome.at_rcpt:
            self.learn(route, address, False, outcome.text)

    def _untry(self, envelope: Envelope, rcpt: Recipient, key: str, now: float) -> None:
        """The try counted before the connection never reached this recipient: take it back.
        It waits for its next attempt (or for the flush when the target answers again)."""
        rcpt.attempts = max(0, rcpt.attempts - 1)
        if rcpt.next_attempt == 0.0:  # counted as the last try: it is not
            when = self.rule(key).next_attempt(rcpt.attempts, envelope.received_at, now)
            rcpt.next_attempt = when or 0.0

    def fail_untried(
        self, envelope: Envelope, key: str, rcpts: list[Recipient], error: str
    ) -> defer.Deferred:
        """The target is down (``error``: why): this try fails without a connection (it
        still counts).

        Nothing was acted on, so the new count is kept in memory only (written with the next
        real state change): a crash can forget it, which costs one more retry, never mail.
        This keeps a dead primary from costing a disk write per message and interval."""
        now = self.clock.seconds()
        rule = self.rule(key)
        failed: Failed = []
        outcome = Outcome("tempfail", 0, f"4.4.1 target is down: {error}")
        for rcpt in rcpts:
            if rcpt.next_attempt > now:
                # Not due by its own schedule (a flush made it due, then the target went
                # down before it was tried): no try to count; it keeps its next attempt.
                continue
            rcpt.attempts += 1
            rcpt.last_reply = outcome.reply
            when = rule.next_attempt(rcpt.attempts, envelope.received_at, now)
            self._log_attempt(envelope, rcpt, outcome)
            if when is None:
                rcpt.state = "failed"
                failed.append((rcpt, outcome))
                self.stats.bounced += 1
            else:
                rcpt.next_attempt = when
                self.stats.deferred += 1
        # Never sent by this run: the recipients' in-flight marks are left alone (a try
        # under way elsewhere keeps its mark, written with any envelope update meanwhile).
        flushed = self.backlog.inflight.release(envelope.id, key, None)
        if failed or self._wants_delay_warning(envelope, now):
            return self.settle(envelope, key, failed, now, untried=True, flushed=flushed)
        # The common case (a dead target, retries left): nothing to write or send, so no
        # Deferred machinery either; this runs for every message that falls due meanwhile.
        self.unsaved.add(envelope.id)
        self._reschedule(envelope, key, untried=True, flushed=flushed)
        return defer.succeed(None)

    # -- making it durable ---------------------------------------------------------------------
    def update(self, envelope: Envelope) -> defer.Deferred:
        """Write the envelope as memory holds it; if that fails, memory and file may differ
        from now on (``Envelopes.doubt``: the snapshot of a clean stop leaves it out)."""

        def doubt(failure: Failure) -> Failure:
            self.backlog.envelopes.doubt(envelope.id)
            return failure

        return self.spool.update(envelope).addErrback(doubt)

    def save_counts(self, for_snapshot: bool = False) -> defer.Deferred:
        """Write the envelopes whose try counts are in memory only (at a clean stop): the
        next process logs and counts ``attempt=N+1``, not ``attempt=1`` again, and the
        route's ``retries`` hold across restarts.  A crash still forgets them (one more
        retry each, never mail).  ``for_snapshot``: those the stop's snapshot carries to
        the next start-up (packed, not doubted, no line in the try log) are left to it
        (``left_to_snapshot``): after a long outage with a big queue that is nearly all of
        it, and writing a million took minutes.  (One whose file a round rewrote in the
        last seconds is read from that file instead: it may lose a try's count.)"""
        qids, self.unsaved = self.unsaved, set()
        if for_snapshot:
            logged, keeps = tries.read(self.spool.root), self.backlog.envelopes.snapshot_keeps
            left = {qid for qid in qids if keeps(qid) and qid not in logged}
            qids -= left
            self.left_to_snapshot = len(left)
        writes = [  # read, not unpacked for good: an update serialises it at once
            self.update(envelope)
            for envelope in (self.backlog.envelopes.peek(qid) for qid in sorted(qids))
            if envelope is not None and not self.backlog.inflight.busy(envelope.id)
        ]
        return defer.DeferredList(writes, consumeErrors=True).addCallback(_count_failures)

    def _settle_or_retry(
        self,
        envelope: Envelope,
        key: str,
        failed: Failed,
        now: float,
        flushed: bool,
        relayed: Failed | None = None,
    ) -> defer.Deferred:
        """``settle``; if the spool refuses (disk full...), the outcome is already decided in
        memory, so writing it (and the DSN) is tried again in a minute, not the delivery."""

        def retry_later(failure: Failure) -> None:
            _log_local_failure(
                failure, "recording the outcome of id={id} failed; again in 60 s", id=envelope.id
            )

            def again() -> None:
                if self.backlog.envelopes.get(envelope.id) is envelope:
                    now = self.clock.seconds()
                    logged(self._settle_or_retry(envelope, key, failed, now, flushed, relayed))

            self.clock.callLater(RECORD_RETRY, again)

        d = self.settle(envelope, key, failed, now, flushed=flushed, relayed=relayed)
        return d.addErrback(retry_later)

    @defer.inlineCallbacks
    def settle(
        self,
        envelope: Envelope,
        key: str,
        failed: Failed,
        now: float,
        untried: bool = False,
        flushed: bool = False,
        relayed: Failed | None = None,
    ) -> Any:
        """Send the DSN for ``failed`` and the success notice for ``relayed`` (first: a crash
        then repeats them, never loses them), then write the envelope, or remove the message
        when nothing is pending.  A try that made no connection (``untried``) changes
        nothing worth a disk write by itself.  If this fails, what memory holds of the
        message may not be on disk (``Envelopes.doubt``)."""
        try:
            changed = not untried or bool(failed)
            if relayed:
                yield self._notify(envelope, relayed, now, "relayed")
            if failed:
                yield self._notify(envelope, failed, now, "failed")
            elif self._wants_delay_warning(envelope, now):
                delayed = [(r, Outcome("tempfail", 0, r.last_reply)) for r in envelope.pending()]
                envelope.delay_warned = True
                changed = True
                yield self._notify(envelope, delayed, now, "delayed")
            if self.backlog.envelopes.get(envelope.id) is not envelope:
                return  # deleted (by the operator) while the DSN was queued: nothing to write
            if not envelope.pending():
                yield self.spool.remove(envelope.id)
                self.backlog.forget(envelope)
                return
            if changed:
                yield self.spool.update(envelope)
        except Exception:
            self.backlog.envelopes.doubt(envelope.id)
            raise
        self._reschedule(envelope, key, untried, flushed)

    @defer.inlineCallbacks
    def _notify(self, envelope: Envelope, rcpts: Failed, now: float, action: str) -> Any:
        dsn = yield self.dsn.notify(envelope, rcpts, now, action)
        if dsn is not None:
            self.backlog.add(dsn, self.clock.seconds())

    def _reschedule(self, envelope: Envelope, key: str, untried: bool, flushed: bool) -> None:
        """File the message's next attempt at ``key``: its recipients' own, or now if it
        failed only because the target was down and it is back, or if a flush passed over it
        while its outcome was being written."""
        at_once = (untried or flushed) and self.health.is_up(key)
        self.backlog.reschedule(envelope, key, self.clock.seconds() if at_once else None)

    def _wants_delay_warning(self, envelope: Envelope, now: float) -> bool:
        after = self.delay_warning
        return bool(after) and not envelope.delay_warned and now - envelope.received_at >= after

    def _log_attempt(self, envelope: Envelope, rcpt: Recipient, outcome: Outcome) -> None:
        log.info(
            "delivery id={id} rcpt=<{rcpt}> target={target} attempt={attempt} "
            "outcome={outcome} reply={reply}",
            id=envelope.id,
            rcpt=rcpt.address,
            target=outcome.remote or target_key(rcpt),
            attempt=rcpt.attempts,
            outcome=outcome.kind,
            reply=outcome.reply,
        )


_MX_RULE = RetryRule()  # mail delivered by MX lookup (bounces, authenticated relay)


def logged(d: defer.Deferred) -> None:
    """Bookkeeping that runs on its own: a failure is logged, never lost."""
    d.addErrback(lambda f: log.failure("delivery bookkeeping failed", f))


def _count_failures(results: list[tuple[bool, Any]]) -> None:
    errors = [str(failure.value) for ok, failure in results if not ok]
    if errors:
        log.error(
            "{n} try counts not written at stop (one more retry each): {error}",
            n=len(errors),
            error=errors[0],
        )


def _log_local_failure(failure: Failure, message: str, **fields: Any) -> None:
    """A local failure while recording: the server stopping is news, the spool refusing an
    error (one line: the reason is the OS's), anything else a bug (with its traceback).
    Either way the outcome is recorded again later, or tried again after a restart."""
    if failure.check(SpoolStopping):
        log.info(message + ": the server is stopping (retried after the restart)", **fields)
    elif failure.check(OSError):
        log.error(message + ": {error}", error=str(failure.value), **fields)
    else:
        log.failure(message, failure, **fields)
