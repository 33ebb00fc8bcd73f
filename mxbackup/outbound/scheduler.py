"""The retry scheduler: when to try which recipient, against which target, how many at once.

A ``LoopingCall`` (on an injected clock) ticks every ``delivery.tick`` seconds.  The schedule
is an in-RAM heap of (when, message, target) rebuilt from the spool at start-up; a tick pops
only what is due, so its cost follows what is due, not the queue's size.

State is per recipient (``Envelope.recipients``): attempts, next attempt, last reply.  Before
an attempt the new state (attempts + 1, when to retry) is written to the envelope; after it,
the outcome is; a restart resumes from there.  A crash between the two can repeat a delivery
(one duplicate), never lose one.

Targets (a route, or ``mx:<domain>`` for mail delivered by MX lookup) have their own state:
at most ``max_connections_per_target`` connections, each carrying up to
``max_messages_per_connection`` messages; when a connection to a target fails, the target is
*down*: messages that fall due meanwhile count a failed try without connecting, and one cheap
probe (connect, EHLO, QUIT) every ``probe_interval`` seconds checks whether it is back.  When
a probe or any delivery to it succeeds, the target's whole queue is flushed at once.
"""

from __future__ import annotations

import heapq
import math
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from mxbackup.config import Config, Route
from mxbackup.outbound import bounce
from mxbackup.outbound.nexthop import NextHop, NoRoute
from mxbackup.outbound.policy import RetryRule
from mxbackup.queue.envelope import Envelope, Recipient
from mxbackup.queue.spool import Spool
from mxbackup.routes import RouteTable
from mxbackup.stats import Stats
from mxbackup.wire.client import Attempt, Gate, Job
from mxbackup.wire.contract import Outcome, Settings

log = Logger(namespace="mxbackup.scheduler")
APPLY_EVERY = 50  # finished transactions recorded together while their connection goes on

Deliver = Callable[[list[Any], Settings, list[Job]], defer.Deferred]


@dataclass
class Target:
    key: str
    down_since: float = 0.0  # 0: up (or not known to be down)
    next_probe: float = 0.0
    last_error: str = ""
    active: int = 0
    probing: bool = False
    # Known to take mail now (a session or probe worked since it was last down): until
    # then one connection at a time, so an unknown or dead target does not cost a full
    # set of connections, each with its batch of envelope writes.
    proven: bool = False
    waiting: deque[str] = field(default_factory=deque)
    reflush: set[str] = field(default_factory=set)  # flushed while their outcome was written

    @property
    def down(self) -> bool:
        return self.down_since > 0


def _all_written(results: list[tuple[bool, Any]]) -> None:
    errors = [str(failure.value) for ok, failure in results if not ok]
    if errors:
        log.error("envelopes not written before delivery: {errors}", errors="; ".join(errors))
        raise OSError(f"could not write the envelopes before delivery: {errors[0]}")


def target_key(rcpt: Recipient) -> str:
    if rcpt.route is not None:
        return rcpt.route
    return "mx:" + rcpt.address.rpartition("@")[2].lower()


class Scheduler:
    def __init__(
        self,
        config: Config,
        spool: Spool,
        clock: Any,
        nexthop: NextHop,
        deliver: Deliver,
        stats: Stats | None = None,
    ) -> None:
        self.spool = spool
        self.clock = clock
        self.nexthop = nexthop
        self.deliver = deliver
        self.stats = stats or Stats()
        self.queue: dict[str, Envelope] = {}
        self.targets: dict[str, Target] = {}
        self._slots: dict[int, list[tuple[float, str, str]]] = {}  # second -> due entries
        self._slot_order: list[int] = []  # heap of the seconds in _slots
        self._due_at: dict[tuple[str, str], float] = {}
        self._by_target: dict[str, set[str]] = defaultdict(set)
        self._inflight: set[tuple[str, str]] = set()
        self._startup_probes: set[str] = set()
        self._loop: task.LoopingCall | None = None
        self._kicked = False
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self.delivery = config.delivery
        self.routes = RouteTable(config.routes)
        self._route_by_key = {r.domain: r for r in config.routes}

    # -- the queue ---------------------------------------------------------------------------
    def load(self, envelopes: list[Envelope]) -> None:
        """The queue at start-up.  Every target with mail is probed at the first tick and
        flushed if it answers; attempts a crash interrupted are retried at once."""
        for envelope in envelopes:
            self.add(envelope)
        self._startup_probes = set(self._by_target)

    def add(self, envelope: Envelope) -> None:
        """A message entered the queue (accepted, or loaded at start-up): schedule it."""
        self.queue[envelope.id] = envelope
        now = self.clock.seconds()
        for key, rcpts in self._pending_by_target(envelope).items():
            self._by_target[key].add(envelope.id)
            when = min(now if r.inflight else r.next_attempt for r in rcpts)
            self._schedule(envelope.id, key, when)

    def wakeup(self, envelope: Envelope) -> None:
        """Called by the SMTP side after a commit: the first try starts at once (in the next
        reactor turn, shared with whatever else arrives meanwhile), not at the next tick."""
        self.add(envelope)
        self._kick()

    def _kick(self) -> None:
        """Run a tick soon: new or flushed mail goes out without waiting up to ``tick``."""
        if not self._kicked:
            self._kicked = True
            self.clock.callLater(0, self._kicked_tick)

    def _kicked_tick(self) -> None:
        self._kicked = False
        self.tick()

    def flush(self, key: str | None = None) -> int:
        """Make every pending recipient (of one target, or all) due now; returns how many
        messages were rescheduled."""
        now = self.clock.seconds()
        keys = [key] if key is not None else list(self._by_target)
        count = 0
        for k in keys:
            target = self.targets.get(k)
            if target is not None and target.down:
                target.next_probe = now  # probe first; a success flushes again
            for qid in list(self._by_target.get(k, ())):
                if (qid, k) not in self._inflight:
                    self._schedule(qid, k, now)
                    count += 1
                elif target is not None:
                    # Its outcome is still being recorded: once it is, it is due at once
                    # too (else a flush racing with the end of a connection strands it
                    # until minutes_between_retries).
                    target.reflush.add(qid)
        if count:
            self._kick()
        return count

    def _pending_by_target(self, envelope: Envelope) -> dict[str, list[Recipient]]:
        groups: dict[str, list[Recipient]] = defaultdict(list)
        for rcpt in envelope.recipients:
            if rcpt.state == "pending":
                groups[target_key(rcpt)].append(rcpt)
        return groups

    def _schedule(self, qid: str, key: str, when: float) -> None:
        """Due at ``when``: filed in the slot of its second (a timer wheel's bucket).  Only
        the slots are kept in order, so filing and taking an entry cost the same with 100
        or 100,000 messages queued (a heap of every entry costs log(n) and cache misses)."""
        self._due_at[(qid, key)] = when
        slot = math.floor(when)
        entries = self._slots.get(slot)
        if entries is None:
            entries = self._slots[slot] = []
            heapq.heappush(self._slot_order, slot)
        entries.append((when, qid, key))

    # -- the clock -----------------------------------------------------------------------------
    def start(self) -> defer.Deferred:
        self._loop = task.LoopingCall(self.tick)
        self._loop.clock = self.clock
        return self._loop.start(self.delivery.tick, now=True)

    def stop(self) -> None:
        if self._loop is not None and self._loop.running:
            self._loop.stop()

    def tick(self) -> None:
        """Never raises (a LoopingCall stops for good when its callable does) and never
        returns in-flight work (it would wait for it)."""
        try:
            self._tick()
        except Exception:  # noqa: BLE001
            log.failure("scheduler tick failed")

    def _tick(self) -> None:
        now = self.clock.seconds()
        started: set[str] = set()
        while self._slot_order and self._slot_order[0] <= now:
            slot = heapq.heappop(self._slot_order)
            later = []
            for entry in self._slots.pop(slot):
                when, qid, key = entry
                if when > now:
                    later.append(entry)  # later in this second
                    continue
                if self._due_at.get((qid, key)) != when or (qid, key) in self._inflight:
                    continue  # superseded by a later schedule, or already being tried
                del self._due_at[(qid, key)]
                if self._take(qid, key, now):
                    started.add(key)
            if later:
                if slot in self._slots:  # filed again meanwhile
                    self._slots[slot].extend(later)
                else:
                    self._slots[slot] = later
                    heapq.heappush(self._slot_order, slot)
                break
        for key in started:
            self._start_connections(self.targets[key])
        while self._startup_probes:
            key = self._startup_probes.pop()
            target = self.targets.setdefault(key, Target(key))
            if not target.probing and not target.down:
                self._run(self._probe(target))
        for target in list(self.targets.values()):
            if target.down and not target.probing and target.next_probe <= now:
                if self._by_target.get(target.key):
                    self._probe(target)

    def _take(self, qid: str, key: str, now: float) -> bool:
        """A due (message, target): queue it for a connection, or, when the target is down,
        count a failed try without connecting.  True when it waits for a connection."""
        envelope = self.queue.get(qid)
        if envelope is None or envelope.held:
            return False
        rcpts = self._pending_by_target(envelope).get(key)
        if not rcpts:
            return False
        target = self.targets.setdefault(key, Target(key))
        self._inflight.add((qid, key))
        if target.down:
            self._run(self._fail_untried(envelope, key, rcpts, target))
            return False
        target.waiting.append(qid)
        return True

    # -- connections ---------------------------------------------------------------------------
    def _start_connections(self, target: Target) -> None:
        limit = self.delivery.max_connections_per_target if target.proven else 1
        while target.waiting and target.active < limit and not target.down:
            batch = []
            while target.waiting and len(batch) < self.delivery.max_messages_per_connection:
                batch.append(target.waiting.popleft())
            target.active += 1
            self._run(self._connection(target, batch))

    def _run(self, d: defer.Deferred) -> None:
        d.addErrback(lambda f: log.failure("delivery bookkeeping failed", f))

    @defer.inlineCallbacks
    def _connection(self, target: Target, qids: list[str]) -> Any:
        key = target.key
        done: list[Job] = []  # finished in the session, not yet recorded
        try:
            now = self.clock.seconds()
            jobs: list[Job] = []
            for qid in qids:
                envelope = self.queue.get(qid)
                rcpts = self._pending_by_target(envelope).get(key) if envelope else None
                if envelope is None or not rcpts:
                    self._inflight.discard((qid, key))
                    continue
                rule = self._rule(key)
                for rcpt in rcpts:
                    rcpt.attempts += 1
                    rcpt.inflight = True
                    rcpt.next_attempt = (
                        rule.next_attempt(rcpt.attempts, envelope.received_at, now) or 0.0
                    )
                jobs.append(
                    Job(
                        qid=qid,
                        sender=envelope.sender,
                        recipients=[r.address for r in rcpts],
                        path=self.spool.message_path(qid),
                        size=envelope.size,
                        eight_bit=(envelope.params.get("BODY") or "").upper() == "8BITMIME",
                        on_done=lambda job: self._job_done(target, job, done),
                    )
                )
            if not jobs:
                return
            # The new state is on disk before we act on it: the connection and EHLO go on
            # meanwhile, the first MAIL waits for the writes (the jobs' gate).
            written = defer.DeferredList(
                [self.spool.update(self.queue[j.qid]) for j in jobs], consumeErrors=True
            )
            gate = Gate(written.addCallback(_all_written))
            for job in jobs:
                job.gate = gate
            attempt = yield self._attempt(key, jobs)
            yield self._apply(target, jobs, attempt)
        except Exception:  # noqa: BLE001
            log.failure("delivery to {key} failed locally", key=key)
            for qid in qids:
                envelope = self.queue.get(qid)
                for rcpt in envelope.recipients if envelope else ():
                    rcpt.inflight = False
                if (qid, key) in self._inflight:
                    self._inflight.discard((qid, key))
                    self._schedule(qid, key, self.clock.seconds() + 60)
        finally:
            target.active -= 1
            self._start_connections(target)  # more of them, if this one proved the target

    @defer.inlineCallbacks
    def _attempt(self, key: str, jobs: list[Job]) -> Any:
        route = self._route_by_key.get(key)
        try:
            if route is not None:
                candidates = yield self.nexthop.for_route(route)
            else:
                candidates = yield self.nexthop.for_domain(key.removeprefix("mx:"))
        except NoRoute as e:
            for job in jobs:
                job.finish_all(Outcome("permfail", 0, f"5.1.2 {e}"))
            return Attempt(True, "", str(e))
        if not candidates:
            why = "no address to connect to (or only our own)"
            for job in jobs:
                job.finish_all(Outcome("tempfail", 0, f"4.4.4 {why}"))
            return Attempt(False, "", why)
        attempt = yield self.deliver(candidates, self._settings(route), jobs)
        return attempt

    def _settings(self, route: Route | None) -> Settings:
        d = self.delivery
        return Settings.for_route(
            route,
            d.helo_name or self.config.server.hostname,
            connect_timeout=d.connect_timeout,
            reply_timeout=d.reply_timeout,
        )

    def _rule(self, key: str) -> RetryRule:
        return RetryRule.for_route(self._route_by_key.get(key))

    @defer.inlineCallbacks
    def _probe(self, target: Target) -> Any:
        """Connect, EHLO, QUIT: is the target back?  Costs one connection per interval."""
        target.probing = True
        try:
            attempt = yield self._attempt(target.key, [])
        except Exception:  # noqa: BLE001
            log.failure("probe of {key} failed", key=target.key)
            attempt = Attempt(False, "", "probe failed locally")
        finally:
            target.probing = False
        now = self.clock.seconds()
        usable = attempt.connected and not attempt.broken  # e.g. AUTH refused: not "up"
        if usable and target.down:
            log.info(
                "target {key} is back ({remote}): flushing", key=target.key, remote=attempt.remote
            )
            self._mark_up(target)
        elif usable:  # the start-up probe: it answers, so hand over its queue now
            target.proven = True
            self.flush(target.key)
            self._start_connections(target)
        elif target.down:
            target.last_error = attempt.error
            target.next_probe = now + self.delivery.probe_interval
        else:
            self._mark_down(target, attempt.error)

    def _mark_up(self, target: Target) -> None:
        was_down = target.down
        target.proven = True
        target.down_since = 0.0
        target.last_error = ""
        if was_down:
            self.flush(target.key)
        self._start_connections(target)  # proven: what waits may have more connections now

    def _mark_down(self, target: Target, error: str) -> None:
        now = self.clock.seconds()
        target.proven = False
        if not target.down:
            log.info("target {key} is down: {error}", key=target.key, error=error)
            target.down_since = now
        target.last_error = error
        target.next_probe = now + self.delivery.probe_interval
        while target.waiting:
            qid = target.waiting.popleft()
            envelope = self.queue.get(qid)
            rcpts = self._pending_by_target(envelope).get(target.key) if envelope else None
            if envelope is None or not rcpts:
                self._inflight.discard((qid, target.key))
                continue
            self._run(self._fail_untried(envelope, target.key, rcpts, target))

    # -- outcomes ------------------------------------------------------------------------------
    @defer.inlineCallbacks
    def _apply(self, target: Target, jobs: list[Job], attempt: Attempt) -> Any:
        # A session that broke (reset, timeout, 421) makes the target "down" even if it took
        # some mail: what it did not take waits for the probe, and is flushed when the
        # target answers again, instead of waiting for minutes_between_retries.
        if attempt.connected and not attempt.broken:
            self._mark_up(target)
        else:
            self._mark_down(target, attempt.error)
        for job in jobs:
            if not job.recorded:
                yield self._record(target, job)

    def _job_done(self, target: Target, job: Job, done: list[Job]) -> None:
        """A transaction ended while the connection goes on: its outcome is recorded with
        the next APPLY_EVERY finished ones (or at the end of the connection), so a crash
        repeats at most that many deliveries known to have worked.  (Recording each at once
        cost a quarter of the drain's speed here: a spool round beside every few messages.)"""
        if not job.done:
            return
        done.append(job)
        if len(done) >= APPLY_EVERY:
            batch = done[:]
            done.clear()
            for finished in batch:
                self._run(self._record(target, finished))

    @defer.inlineCallbacks
    def _record(self, target: Target, job: Job) -> Any:
        """Record one job's outcome, once; a local failure (the envelope cannot be written)
        leaves it for a retry in a minute instead of stuck in flight."""
        job.recorded = True
        try:
            yield self._apply_job(target, job)
        except Exception:  # noqa: BLE001
            log.failure("recording the outcome of id={id} failed", id=job.qid)
            envelope = self.queue.get(job.qid)
            for rcpt in envelope.recipients if envelope else ():
                if target_key(rcpt) == target.key:
                    rcpt.inflight = False
            self._inflight.discard((job.qid, target.key))
            if envelope is not None:
                self._schedule(job.qid, target.key, self.clock.seconds() + 60)

    @defer.inlineCallbacks
    def _apply_job(self, target: Target, job: Job) -> Any:
        now = self.clock.seconds()
        envelope = self.queue.get(job.qid)
        if envelope is None:  # deleted by the operator meanwhile
            self._inflight.discard((job.qid, target.key))
            return
        failed: list[tuple[Recipient, Outcome]] = []
        for rcpt in envelope.recipients:
            outcome = job.outcomes.get(rcpt.address)
            if rcpt.state != "pending" or target_key(rcpt) != target.key or outcome is None:
                continue
            rcpt.last_reply = outcome.reply
            rcpt.inflight = False
            if not outcome.tried:
                self._untry(envelope, rcpt, key=target.key, now=now)
            self._log_attempt(envelope, rcpt, outcome)
            if outcome.kind == "delivered":
                rcpt.state = "delivered"
                self.stats.delivered += 1
            elif outcome.kind == "permfail" or rcpt.next_attempt == 0.0:
                rcpt.state = "failed"
                failed.append((rcpt, outcome))
                self.stats.bounced += 1
            else:
                self.stats.deferred += 1
        self._inflight.discard((job.qid, target.key))
        yield self._settle_or_retry(envelope, target.key, failed, now)

    def _settle_or_retry(
        self, envelope: Envelope, key: str, failed: list[tuple[Recipient, Outcome]], now: float
    ) -> defer.Deferred:
        """``_settle``; if the spool refuses (disk full...), the outcome is already decided in
        memory, so writing it (and the DSN) is tried again in a minute, not the delivery."""

        def retry_later(failure: Failure) -> None:
            log.failure(
                "recording the outcome of id={id} failed; again in 60 s", failure, id=envelope.id
            )

            def again() -> None:
                if self.queue.get(envelope.id) is envelope:
                    self._run(self._settle_or_retry(envelope, key, failed, self.clock.seconds()))

            self.clock.callLater(60, again)

        return self._settle(envelope, key, failed, now).addErrback(retry_later)

    def _untry(self, envelope: Envelope, rcpt: Recipient, key: str, now: float) -> None:
        """The try counted before the connection never reached this recipient: take it back.
        It waits for its next attempt (or for the flush when the target answers again)."""
        rcpt.attempts = max(0, rcpt.attempts - 1)
        if rcpt.next_attempt == 0.0:  # counted as the last try: it is not
            when = self._rule(key).next_attempt(rcpt.attempts, envelope.received_at, now)
            rcpt.next_attempt = when or 0.0

    def _fail_untried(
        self, envelope: Envelope, key: str, rcpts: list[Recipient], target: Target
    ) -> defer.Deferred:
        """The target is down: this try fails without a connection (it still counts).

        Nothing was acted on, so the new count is kept in memory only (written with the next
        real state change): a crash can forget it, which costs one more retry, never mail.
        This keeps a dead primary from costing a disk write per message and interval."""
        now = self.clock.seconds()
        rule = self._rule(key)
        failed: list[tuple[Recipient, Outcome]] = []
        outcome = Outcome("tempfail", 0, f"4.4.1 target is down: {target.last_error}")
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
        self._inflight.discard((envelope.id, key))
        if failed or self._wants_delay_warning(envelope, now):
            return self._settle(envelope, key, failed, now, untried=True)
        # The common case (a dead target, retries left): nothing to write or send, so no
        # Deferred machinery either; this runs for every message that falls due meanwhile.
        self._reschedule(envelope, key, untried=True)
        return defer.succeed(None)

    @defer.inlineCallbacks
    def _settle(
        self,
        envelope: Envelope,
        key: str,
        failed: list[tuple[Recipient, Outcome]],
        now: float,
        untried: bool = False,
    ) -> Any:
        """Send the DSN for ``failed`` (first: a crash then repeats it, never loses it),
        then write the envelope, or remove the message when nothing is pending.  A try that
        made no connection (``untried``) changes nothing worth a disk write by itself."""
        changed = not untried or bool(failed)
        if failed:
            yield self._notify(envelope, failed, now, "failed")
        elif self._wants_delay_warning(envelope, now):
            delayed = [(r, Outcome("tempfail", 0, r.last_reply)) for r in envelope.pending()]
            envelope.delay_warned = True
            changed = True
            yield self._notify(envelope, delayed, now, "delayed")
        if self.queue.get(envelope.id) is not envelope:
            return  # deleted (by the operator) while the DSN was being queued: nothing to write
        if not envelope.pending():
            yield self.spool.remove(envelope.id)
            self._forget(envelope)
            return
        if changed:
            yield self.spool.update(envelope)
        self._reschedule(envelope, key, untried)

    def _reschedule(self, envelope: Envelope, key: str, untried: bool) -> None:
        """File the message's next attempt at ``key``, or forget it there if none is left."""
        rcpts = self._pending_by_target(envelope).get(key)
        if rcpts:
            when = min(r.next_attempt for r in rcpts)
            target = self.targets.get(key)
            flushed = target is not None and envelope.id in target.reflush
            if target is not None and not target.down and (untried or flushed):
                # It failed only because the target was down, and it is back, or a flush
                # passed over it while its outcome was being written: try again now.
                when = self.clock.seconds()
            if flushed:
                target.reflush.discard(envelope.id)
            self._schedule(envelope.id, key, when)
        else:
            self._by_target[key].discard(envelope.id)
            target = self.targets.get(key)
            if target is not None:
                target.reflush.discard(envelope.id)

    def _wants_delay_warning(self, envelope: Envelope, now: float) -> bool:
        after = self.delivery.delay_warning
        return bool(after) and not envelope.delay_warned and now - envelope.received_at >= after

    def _forget(self, envelope: Envelope) -> None:
        self.queue.pop(envelope.id, None)
        for rcpt in envelope.recipients:
            key = target_key(rcpt)
            self._by_target[key].discard(envelope.id)
            self._due_at.pop((envelope.id, key), None)
            target = self.targets.get(key)
            if target is not None:
                target.reflush.discard(envelope.id)
            if not self._by_target[key]:
                del self._by_target[key]

    @defer.inlineCallbacks
    def _notify(
        self,
        envelope: Envelope,
        rcpts: list[tuple[Recipient, Outcome]],
        now: float,
        action: str,
    ) -> Any:
        with open(self.spool.message_path(envelope.id), "rb") as f:
            headers = bounce.header_block(f.read(256 * 1024))
        if not bounce.should_notify(envelope, headers):
            log.info("no DSN for id={id}: null sender or auto-submitted", id=envelope.id)
            return
        hostname = self.config.server.hostname
        data = bounce.build_dsn(envelope, rcpts, hostname, headers, now, action)
        incoming = self.spool.incoming()
        incoming.write(data)
        sender_route = self.routes.lookup(envelope.sender.rpartition("@")[2])
        dsn = Envelope(
            id=incoming.id,
            sender="",
            recipients=[Recipient(envelope.sender, sender_route.domain if sender_route else None)],
            received_at=now,
            size=len(data),
            client_ip="",
            helo=hostname,
        )
        yield self.spool.commit(incoming, dsn)
        self.stats.dsn_sent += 1
        log.info(
            "dsn id={dsn} for id={id} action={action} to=<{to}> rcpts={rcpts}",
            dsn=dsn.id,
            id=envelope.id,
            action=action,
            to=envelope.sender,
            rcpts=",".join(r.address for r, _ in rcpts),
        )
        self.add(dsn)

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

    # -- administration (control socket, ETRN, manhole) ------------------------------------------
    def flush_message(self, qid: str) -> bool:
        envelope = self._get(qid)
        now = self.clock.seconds()
        for key in self._pending_by_target(envelope):
            if (qid, key) not in self._inflight:
                self._schedule(qid, key, now)
        return True

    @defer.inlineCallbacks
    def hold(self, qid: str) -> Any:
        envelope = self._get(qid)
        envelope.held = True
        yield self.spool.update(envelope)
        return True

    @defer.inlineCallbacks
    def release(self, qid: str) -> Any:
        envelope = self._get(qid)
        envelope.held = False
        yield self.spool.update(envelope)
        self.flush_message(qid)
        return True

    @defer.inlineCallbacks
    def delete(self, qid: str) -> Any:
        """Remove the message without telling anyone (postsuper -d)."""
        envelope = self._get(qid)
        self._forget(envelope)
        yield self.spool.remove(qid)
        log.info("deleted id={id} by the administrator", id=qid)
        return True

    @defer.inlineCallbacks
    def bounce_now(self, qid: str) -> Any:
        """Give up on every pending recipient now: the sender gets the DSN."""
        envelope = self._get(qid)
        now = self.clock.seconds()
        failed = []
        for rcpt in envelope.pending():
            outcome = Outcome("permfail", 0, "5.0.0 returned to sender by the administrator")
            if rcpt.last_reply:
                outcome = Outcome(
                    "permfail",
                    0,
                    f"5.0.0 given up by the administrator; last reply: {rcpt.last_reply}",
                )
            rcpt.state = "failed"
            failed.append((rcpt, outcome))
            self.stats.bounced += 1
        key = target_key(failed[0][0]) if failed else ""
        yield self._settle(envelope, key, failed, now)
        log.info("bounced id={id} by the administrator", id=qid)
        return True

    def _get(self, qid: str) -> Envelope:
        envelope = self.queue.get(qid)
        if envelope is None:
            raise KeyError(f"no message {qid} in the queue")
        if any(q == qid for q, _ in self._inflight):
            raise ValueError(f"message {qid} is being delivered right now; try again shortly")
        return envelope

    def keys_for_domain(self, domain: str) -> list[str]:
        """The targets ETRN may flush for ``domain``: its route (exact or wildcard)."""
        route = self.routes.lookup(domain)
        return [route.domain] if route is not None else []

    # -- monitoring ----------------------------------------------------------------------------
    def depth_by_target(self) -> dict[str, int]:
        return {key: len(qids) for key, qids in self._by_target.items() if qids}

    def oldest_age(self) -> float:
        if not self.queue:
            return 0.0
        now = self.clock.seconds()
        return now - min(e.received_at for e in self.queue.values())
