"""The retry scheduler: when to try which message, against which target, how many at once.

A ``LoopingCall`` (on an injected clock) ticks every ``delivery.tick`` seconds.  The schedule
(``Backlog``: a timer wheel of (message, target) rebuilt from the spool at start-up) yields
only what is due, so a tick's cost follows what is due, not the queue's size.

Targets have their own state (``health``): at most ``max_connections_per_target`` connections
(one until the target is proven), each carrying up to ``max_messages_per_connection``
messages; a target that is down gets a failed try without connecting for what falls due, and
one probe every ``probe_interval`` (early in the outage, quick connect-only checks too, each
probing at once when the port takes connections again: ``liveness``); when a probe or any
delivery to it succeeds, the target's whole queue is flushed at once.

A connection is one call of the injected ``deliver`` (the delivery contract,
``mxbackup.wire.contract``): immutable jobs in; each job's result is recorded as it comes
(``recorder``: in batches of ``APPLY_EVERY`` while the connection goes on, the rest when it
has ended), and the session's ``Attempt`` tells the target's health.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Generator, Iterable
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger

from mxbackup.config import Config
from mxbackup.outbound.backlog import Backlog
from mxbackup.outbound.batches import APPLY_EVERY, Batches
from mxbackup.outbound.concurrency import RETRY_SOON, Concurrency
from mxbackup.outbound.dialer import Check, Dialer, no_wait
from mxbackup.outbound.downpace import DownPace
from mxbackup.outbound.envelopes import Envelopes
from mxbackup.outbound.health import Health, Target, target_key
from mxbackup.outbound.jobs import job_for
from mxbackup.outbound.liveness import QuickChecks
from mxbackup.outbound.loading import BackgroundFiling
from mxbackup.outbound.nexthop import NextHop
from mxbackup.outbound.notify import DsnQueue
from mxbackup.outbound.pause import Pauses
from mxbackup.outbound.reasons import with_address
from mxbackup.outbound.recorder import RECORD_RETRY, Recorder, logged
from mxbackup.queue.envelope import Envelope
from mxbackup.queue.prefetchproc import Prefetcher
from mxbackup.queue.recovery import Chunk
from mxbackup.queue.spool import Spool
from mxbackup.queue.tries import tried
from mxbackup.routes import table_for as route_table
from mxbackup.stats import Stats
from mxbackup.wire.contract import Attempt, Deliver, Job

__all__ = ["APPLY_EVERY", "Scheduler", "target_key"]

log = Logger(namespace="mxbackup.scheduler")


class Scheduler:
    def __init__(
        self,
        config: Config,
        spool: Spool,
        clock: Any,
        nexthop: NextHop,
        deliver: Deliver,
        stats: Stats | None = None,
        check: Check | None = None,
        rng: random.Random | None = None,
        prefetcher: Prefetcher | None = None,
    ) -> None:
        self.spool = spool
        # warms the page cache for a connection's messages; stopped with the ticks
        self.prefetcher = prefetcher
        self.clock = clock
        self.dialer = Dialer(nexthop, deliver, config, check)
        self.stats = stats or Stats()
        self.backlog = Backlog()
        self.pauses = Pauses(spool.root)  # mxbackup pause/resume; survives restarts
        self.health = Health()
        self.window = Concurrency()  # connections per target (AIMD)
        self.health.resolved = self.dialer.addresses  # where targets are (the inbound view)
        self.quick = QuickChecks(self.dialer, self.health, lambda t: logged(self._probe(t)), rng)
        self.dsn = DsnQueue(spool, config, self.stats)
        self.recorder = Recorder(
            self.backlog, self.health, spool, self.dsn, clock, self.stats, config
        )
        self._loop: task.LoopingCall | None = None
        # a load in the background: how far (``status``; None: complete), and its filing
        self.load_progress: Callable[[], dict[str, Any] | None] = lambda: None
        self.filing = BackgroundFiling(self.backlog, self.health)
        self._kicked = False
        self._extra = False  # a tick asked for (``_kick``), not the clock's
        self.down = DownPace(clock, self._down_turn)  # tries at targets that are down
        self._stopped = False
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self.delivery = config.delivery
        self.ceiling = config.delivery.max_connections_per_target
        self.routes = route_table(config)
        self.dialer.reconfigure(config)
        self.quick.reconfigure(config.delivery)
        self.recorder.reconfigure(config)
        self.dsn.reconfigure(config)

    @property
    def queue(self) -> Envelopes:
        """Every queued message by id (the manhole's ``len(scheduler.queue)``)."""
        return self.backlog.envelopes

    @property
    def targets(self) -> dict[str, Target]:
        return self.health.targets

    # -- the queue -----------------------------------------------------------------------------
    def load(self, envelopes: Iterable[Envelope | Chunk]) -> None:
        """The queue at start-up (``Spool.recovered``, packed; or envelopes).  Each target is
        probed at the first tick, flushed if it answers; interrupted tries are due at once."""
        now = self.clock.seconds()
        for item in envelopes:
            if isinstance(item, Envelope):
                self.backlog.add(item, now)
            else:
                self.backlog.add_chunk(item, now)
        self.health.probe_at_start(self.backlog.keys())

    def load_chunk(self, chunk: Chunk) -> None:
        """Messages of a big queue read while the server accepts mail (``loading``)."""
        if self.filing.file(chunk, self.clock.seconds()):
            self._kick()

    def loading(self, begins: bool = True) -> None:
        """A big queue is about to be read in the background; or (False) it is read."""
        if begins:
            self.filing.begin()
        else:
            self.filing.end()

    def add(self, envelope: Envelope) -> None:
        """A message entered the queue (accepted, or loaded at start-up): schedule it."""
        self.backlog.add(envelope, self.clock.seconds())

    def wakeup(self, envelope: Envelope) -> None:
        """After a commit (the SMTP side): the first try in the next turn, not tick."""
        self.add(envelope)
        self._kick()

    def _kick(self) -> None:
        """Run a tick soon: new or flushed mail goes out without waiting up to ``tick``."""
        if not self._kicked:
            self._kicked = True
            self.clock.callLater(0, self._kicked_tick)

    def _kicked_tick(self) -> None:
        self._kicked = False
        self._extra = True
        try:
            self.tick()
        finally:
            self._extra = False

    def flush(self, key: str | None = None) -> int:
        """Make every pending recipient (of one target, or all) due now; returns how many
        messages were rescheduled."""
        now = self.clock.seconds()
        keys = [key] if key is not None else self.backlog.keys()
        self.health.flushed(keys, now)
        self.filing.note_flush(keys)  # a big queue being read: the rest as it comes
        count = self.backlog.flush(keys, now)
        if count:
            self._kick()
        return count

    def keys_for_domain(self, domain: str) -> list[str]:
        """The targets ETRN may flush for ``domain``: its route (exact or wildcard)."""
        route = self.routes.lookup(domain)
        return [route.domain] if route is not None else []

    def pause(self, key: str | None) -> None:
        """No delivery to ``key`` (None: to any target) until ``resume``; mail is still
        accepted and queued.  What falls due meanwhile waits (no try is counted)."""
        self.pauses.pause(key)
        log.info("delivery paused: {what}", what=key or "all targets")

    def resume(self, key: str | None) -> None:
        """Undo ``pause``: what fell due meanwhile is due now, the rest at its own time."""
        self.pauses.resume(key)
        log.info("delivery resumed: {what}", what=key or "all targets")
        now = self.clock.seconds()
        for k in [key] if key is not None else self.backlog.keys():
            if not self.pauses.paused(k):
                self.backlog.resume(k, now)
        self._kick()

    # -- the clock -----------------------------------------------------------------------------
    def start(self) -> defer.Deferred:
        self._stopped = False
        self._loop = task.LoopingCall(self.tick)
        self._loop.clock = self.clock
        return self._loop.start(self.delivery.tick, now=True)

    def stop(self, for_snapshot: bool = False) -> defer.Deferred:
        """No more ticks nor warming; fires once the try counts kept in memory only are
        written (``for_snapshot``: but those the stop's snapshot carries)."""
        self._stopped = True  # no tick nor connection after this (probes may still end)
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.down.stop()
        if self.prefetcher is not None:
            self.prefetcher.stop()
        return self.recorder.save_counts(for_snapshot)

    def tick(self) -> None:
        """Never raises (a LoopingCall stops for good when its callable does) and never
        returns in-flight work (it would wait for it)."""
        if self._stopped:  # (a kick, a probe's flush or a connection's end after ``stop``)
            return
        try:
            self._tick()
        except Exception:  # noqa: BLE001
            log.failure("scheduler tick failed")

    def _tick(self) -> None:
        now = self.clock.seconds()
        started: set[str] = set()
        more_down = self._take_due(now, started)
        for key in started:
            self._start_connections(self.health.get(key))
        for target in self.health.startup_probes():
            logged(self._probe(target))
        for target in self.health.due_probes(now):
            if self.backlog.has_mail(target.key):
                logged(self._probe(target))
        self.quick.run(now, self.backlog.has_mail)  # a check that connects probes at once
        if not self._extra:  # the clock's ticks only: a drain asks for one per connection
            self.backlog.compact()  # what waits is kept packed
            self.down.ticked(more_down)

    def _take_due(self, now: float, started: set[str]) -> bool:
        """Take what is due (``_room``); True if a down target's share of the turn was full."""
        untried: dict[str, int] = {}
        targets = self.health.targets
        for qid, key in self.backlog.due_now(now, self._room):
            if self._take(qid, key):
                started.add(key)
            elif key in targets and targets[key].down:
                untried[key] = untried.get(key, 0) + 1
        return self.down.full(untried)

    def _down_turn(self) -> bool:
        """A later turn's share of the tries at targets that are down (``downpace``)."""
        more = self._take_due(self.clock.seconds(), set())
        self.backlog.compact(limit=self.down.per_turn())  # the next tick packs the rest
        return more

    def _room(self, key: str) -> int:
        """How many due entries of ``key`` a tick takes: twice what its connections carry
        at once, less what already waits for one; the rest stays due (a flush of a million:
        no long tick, nor a million in flight).  Tries at a target that is down (no
        connection) are paced by the clock's ticks (``downpace``), never by arrivals'."""
        target = self.health.targets.get(key)
        if target is not None and target.down:
            return self.down.share(self._extra)
        if self.down.later:
            return 0
        most = 2 * self.ceiling * self.delivery.max_messages_per_connection
        return most - self.backlog.inflight.waiting(key)

    def _take(self, qid: str, key: str) -> bool:
        """A due (message, target): queue it for a connection, or, when the target is down,
        count a failed try without connecting.  True when it waits for a connection.  A
        packed envelope stays packed until a connection takes it (``_jobs``)."""
        backlog = self.backlog
        if not backlog.waits_at(qid, key) or backlog.is_held(qid) or self.pauses.paused(key):
            return False  # paused: filed again by ``resume``
        target = self.health.get(key)
        if target.down:
            envelope, rcpts = backlog.pending(qid, key)
            if envelope is not None and rcpts:
                logged(self.recorder.fail_untried(envelope, key, rcpts, target.last_error))
            return False
        backlog.inflight.wait(qid, key)
        return True

    # -- connections ---------------------------------------------------------------------------
    def _start_connections(self, target: Target) -> None:
        if self._stopped:
            return
        limit = self.window.limit(target.key, target.proven, self.ceiling)
        inflight = self.backlog.inflight
        while inflight.waiting(target.key) and target.active < limit and not target.down:
            batch = inflight.next_batch(target.key, self.delivery.max_messages_per_connection)
            target.active += 1
            logged(self._connection(target, batch))

    @defer.inlineCallbacks
    def _connection(self, target: Target, qids: list[str]) -> Any:
        key = target.key
        try:
            jobs = self._jobs(key, qids)
            if not jobs:
                return
            if self.prefetcher is not None:  # read while we connect
                self.prefetcher([(j.path, j.size) for j in jobs])
            # The tries are noted before the connection (``queue.tries``); the envelopes
            # are written with the outcomes.
            tries = [(j.qid, tried(self.queue[j.qid])) for j in jobs]
            self.spool.note_tries(tries, self.backlog.tries, self.clock.seconds())
            delivery = yield self.dialer.dial(key, jobs, no_wait)
            batches = Batches(self.recorder, key, jobs, delivery)
            attempt = yield delivery.done
            if attempt.local_error:
                # not the target's doing (an unreadable ca_file...): as when the client
                # raised, the messages wait a minute and the target is left as it is
                log.error("delivery to {key} failed locally: {error}", key=key, error=attempt.error)
                yield batches.rest(local_error=True)
                return
            gentler = self._observe(target, attempt, probe=False, results=batches.results)
            yield batches.rest(untried=gentler)  # a push-back costs no retry
            if gentler:  # again in a second, within the smaller window
                self.backlog.retry_soon(qids, key, self.clock.seconds() + RETRY_SOON)
        except Exception:  # noqa: BLE001
            log.failure("delivery to {key} failed locally", key=key)
            for qid in qids:
                self.backlog.requeue(qid, key, self.clock.seconds() + RECORD_RETRY)
        finally:
            target.active -= 1
            self._start_connections(target)  # more of them, if this one proved the target
            if not self.backlog.inflight.waiting(key) and self.backlog.due.has_due(
                key, self.clock.seconds()
            ):
                self._kick()  # what is due and was left by the tick (``_room``)

    def _jobs(self, key: str, qids: list[str]) -> list[Job]:
        """The connection's jobs, each try counted (``Recorder.begin``) before it is made."""
        now = self.clock.seconds()
        jobs: list[Job] = []
        for qid in qids:
            envelope, rcpts = self.backlog.pending(qid, key)
            if envelope is None or not rcpts:
                self.backlog.inflight.release(qid, key, envelope)
                continue
            self.recorder.begin(envelope, key, rcpts, now)
            jobs.append(job_for(envelope, rcpts, self.spool.message_path(qid), self.routes, key))
        return jobs

    # -- target health -------------------------------------------------------------------------
    def probe(self, key: str) -> None:
        """Probe ``key``'s target now, unless a check or probe is under way: is it still
        there?  An up target's queue is not flushed by it (``targetview.UpWatch``)."""
        target = self.health.get(key)
        if not target.probing:
            logged(self._probe(target, flush=False))

    @defer.inlineCallbacks
    def _probe(self, target: Target, flush: bool = True) -> Any:
        """Connect, EHLO, QUIT: is the target back?  Costs one connection per interval."""
        target.probing = True
        try:
            delivery = yield self.dialer.dial(target.key, [], no_wait)
            attempt = yield delivery.done
        except Exception:  # noqa: BLE001
            log.failure("probe of {key} failed", key=target.key)
            attempt = Attempt(False, "", "probe failed locally")
        finally:
            target.probing = False
        if target.down and attempt.connected and not attempt.broken:
            log.info(
                "target {key} is back ({remote}): flushing", key=target.key, remote=attempt.remote
            )
        self._observe(target, attempt, probe=flush)

    def _observe(self, target: Target, attempt: Attempt, probe: bool, results: Any = ()) -> bool:
        """What a session or probe showed.  A push-back from a target that is up: fewer
        connections, the rest soon (True; ``concurrency``).  Else a broken session makes the
        target down even if it took some mail: the rest waits for a probe, then a flush (not
        minutes_between_retries).  A usable probe (start-up, or of a down target) flushes."""
        now, active, key = self.clock.seconds(), target.active, target.key
        if not probe and self.window.observe(key, attempt, results, active, self.ceiling, now):
            return True
        if not (attempt.connected and not attempt.broken):  # e.g. AUTH refused: not "up"
            self._mark_down(target, with_address(attempt.remote, attempt.error))
            return False
        if self.health.worked(target) or probe:
            self.flush(target.key)
        self._start_connections(target)  # proven: what waits may have more connections now
        return False

    def _mark_down(self, target: Target, error: str) -> None:
        now = self.clock.seconds()
        if self.health.failed(target, error, now, self.delivery.probe_interval):  # paced
            log.info("target {key} is down: {error}", key=target.key, error=error)
        # counted by the paced ticks (``downpace``), not failed in this turn (thousands at
        # a restart with an overdue queue: a long stall)
        self.backlog.due_again(target.key, now)

    # -- monitoring ----------------------------------------------------------------------------
    def depth_by_target(self) -> dict[str, int]:
        return self.backlog.depth_by_target()

    def oldest_age_steps(self) -> Generator[None, None, float]:
        """How long ago the oldest message arrived, a slice per turn (``turns.in_turns``)."""
        return self.backlog.oldest_age_steps(self.clock.seconds())
