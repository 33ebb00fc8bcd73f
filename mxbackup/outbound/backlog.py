"""The backlog: every queued message, by id and by target, when each is due, what is in
flight.

Pure: no reactor, no I/O; times are passed in.  It keeps its structures in step (a message
and its targets, the due queue, the in-flight registry), so the scheduler, the recording of
outcomes and the queue administration change them only through it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Generator, Iterable, Iterator

from mxbackup.outbound.duequeue import DueByTarget
from mxbackup.outbound.envelopes import Envelopes
from mxbackup.outbound.health import target_key
from mxbackup.outbound.inflight import Entry, InFlight
from mxbackup.queue.envelope import Envelope, Recipient, Targets, id_time, pending_targets
from mxbackup.queue.recovery import Chunk
from mxbackup.queue.tries import Tried, tried
from mxbackup.turns import at_once

SCAN_SLICE = 50_000  # ids looked at per turn of the reactor by the scans of status and stats
OLDEST_TRIES = 3  # scans for the oldest message, if the one found left meanwhile


def pending_by_target(envelope: Envelope) -> dict[str, list[Recipient]]:
    groups: dict[str, list[Recipient]] = defaultdict(list)
    for rcpt in envelope.recipients:
        if rcpt.state == "pending":
            groups[target_key(rcpt)].append(rcpt)
    return groups


def _pending_times(rcpts: list[Recipient]) -> Targets:
    return pending_targets((target_key(r), r.state, r.next_attempt, r.inflight) for r in rcpts)


class Backlog:
    def __init__(self) -> None:
        self.envelopes = Envelopes()  # the queue, by id
        self.due = DueByTarget()  # of entries (queue id, target)
        self.inflight = InFlight()
        # target -> queue id -> its recipients pending there
        self._by_target: dict[str, dict[str, int]] = defaultdict(dict)
        self._held: set[str] = set()

    # -- what is queued ------------------------------------------------------------------------
    def add(self, envelope: Envelope, now: float) -> None:
        """A message entered the queue (accepted, or loaded at start-up): schedule it at each
        of its targets.  An attempt a crash interrupted (``inflight``, from the try log) is
        due now."""
        self.envelopes.put(envelope)
        self._file(envelope.id, envelope.held, now, _pending_times(envelope.recipients))

    def add_chunk(self, chunk: Chunk, now: float) -> None:
        """Messages loaded at start-up (``Spool.recovered``): kept packed, filed in bulk."""
        self.envelopes.put_packed(chunk.qids, chunk.packed)
        self._held.update(chunk.held)
        for key, (qids, counts, whens) in chunk.at.items():
            self._by_target[key].update(zip(qids, counts, strict=True))
            self.due.file_many(key, qids, whens)
        for qid, key, count in chunk.interrupted:  # a crash interrupted a try: due at once
            self._by_target[key][qid] = count
            self.due.schedule((qid, key), now)

    def _file(self, qid: str, held: bool, now: float, targets: Targets) -> None:
        if held:
            self._held.add(qid)
        for key, count, when, interrupted in targets:
            self._by_target[key][qid] = count
            self.due.schedule((qid, key), now if interrupted else when)

    def forget(self, envelope: Envelope) -> None:
        """The message left the queue (done, or deleted)."""
        self.envelopes.discard(envelope.id)
        self._held.discard(envelope.id)
        for rcpt in envelope.recipients:
            key = target_key(rcpt)
            self._by_target[key].pop(envelope.id, None)
            self.due.cancel((envelope.id, key))
            if not self._by_target[key]:
                del self._by_target[key]

    def set_held(self, envelope: Envelope, held: bool) -> None:
        envelope.held = held
        if held:
            self._held.add(envelope.id)
        else:
            self._held.discard(envelope.id)

    def is_held(self, qid: str) -> bool:
        return qid in self._held

    def waits_at(self, qid: str, key: str) -> bool:
        """The message has recipients pending at ``key`` (without unpacking it)."""
        return qid in self._by_target.get(key, ())

    def compact(self, limit: int | None = None) -> int:
        """Pack envelopes nobody is using (a tick's share, or ``limit``); how many were
        packed."""
        return self.envelopes.compact(lambda qid: not self.inflight.busy(qid), limit)

    def pending(self, qid: str, key: str) -> tuple[Envelope | None, list[Recipient]]:
        """The message (if still queued) and its recipients still pending at ``key``."""
        envelope = self.envelopes.get(qid)
        if envelope is None:
            return None, []
        return envelope, pending_by_target(envelope).get(key, [])

    def keys(self) -> list[str]:
        """The targets with mail."""
        return list(self._by_target)

    def has_mail(self, key: str) -> bool:
        return bool(self._by_target.get(key))

    def depth(self, key: str) -> int:
        """Messages with recipients pending at ``key``: O(1) (the route quota reads it at
        every RCPT)."""
        qids = self._by_target.get(key)
        return len(qids) if qids else 0

    def messages_at(self, key: str) -> list[str]:
        """The ids of the messages with recipients pending at ``key``."""
        return list(self._by_target.get(key, ()))

    def arrival(self, qid: str) -> float:
        """When the message arrived (``Envelopes.arrival``: without unpacking it)."""
        return self.envelopes.arrival(qid)

    def recipients_at(self, key: str) -> int:
        """Recipients pending at ``key`` (a sum of small integers: ~5 ms at a million)."""
        return sum(self._by_target.get(key, {}).values())

    def depth_by_target(self) -> dict[str, int]:
        return {key: len(qids) for key, qids in self._by_target.items() if qids}

    def oldest_steps(self, key: str | None = None) -> Generator[None, None, str | None]:
        """The id of the oldest message (waiting at ``key``), ``SCAN_SLICE`` ids looked at per
        turn: at once, the smallest of 677,000 ids took ~100 ms in the server (its strings
        are all over the heap), a stall of acceptance at every ``stats`` or scrape.  The ids
        are copied first (the dicts change between turns); one that leaves the queue
        meanwhile may be the answer (it was the oldest when asked)."""
        ids = self.envelopes.ids() if key is None else list(self._by_target.get(key, ()))
        oldest, big = None, len(ids) > SCAN_SLICE
        for start in range(0, len(ids), SCAN_SLICE):
            if big:
                yield  # (the copy in a turn of its own: ~15-35 ms at a million)
            low = min(ids[start : start + SCAN_SLICE])
            if oldest is None or low < oldest:
                oldest = low
        return oldest

    def oldest_envelope_steps(
        self, key: str | None = None
    ) -> Generator[None, None, tuple[str | None, Envelope | None]]:
        """The oldest message's id and envelope (to read; None if it left during the scan:
        scanned again up to ``OLDEST_TRIES`` times, as a drain delivers the oldest first)."""
        oldest, envelope = None, None
        for _ in range(OLDEST_TRIES):
            oldest = yield from self.oldest_steps(key)
            envelope = self.envelopes.peek(oldest) if oldest is not None else None
            if envelope is not None or oldest is None:
                break
        return oldest, envelope

    def oldest_age(self, now: float) -> float:
        return at_once(self.oldest_age_steps(now))

    def oldest_age_steps(self, now: float) -> Generator[None, None, float]:
        """How long ago the oldest message arrived (its ``received_at``, or the time its id
        was made if it kept leaving during the scans; 0.0 with none), in turns."""
        oldest, envelope = yield from self.oldest_envelope_steps()
        if oldest is None:
            return 0.0
        return now - (envelope.received_at if envelope is not None else id_time(oldest))

    # -- when ----------------------------------------------------------------------------------
    def tries(self) -> Iterator[Tried]:
        """Every try under way (what a rotation of the try log keeps)."""
        for qid in self.inflight.busy_ids():
            envelope = self.envelopes.loaded(qid)
            if envelope is not None:  # packed: waiting, no try under way
                yield qid, tried(envelope)

    def due_now(self, now: float, room: Callable[[str], float] | None = None) -> Iterator[Entry]:
        """The entries due at ``now`` (at most ``room(target)`` of a target's), except those
        in flight (already being tried)."""
        for entry in self.due.pop_due(now, room):
            if entry not in self.inflight:
                yield entry  # type: ignore[misc]

    def schedule(self, qid: str, key: str, when: float) -> None:
        self.due.schedule((qid, key), when)

    def reschedule(self, envelope: Envelope, key: str, at: float | None) -> None:
        """After an outcome: the next attempt at ``key`` (``at``, or its recipients' own
        next attempt), or forget the message there if nothing is pending."""
        rcpts = pending_by_target(envelope).get(key)
        if rcpts:
            when = at if at is not None else min(r.next_attempt for r in rcpts)
            self.due.schedule((envelope.id, key), when)
            self._by_target[key][envelope.id] = len(rcpts)
        else:
            self._by_target[key].pop(envelope.id, None)

    def requeue(self, qid: str, key: str, when: float) -> None:
        """Something failed locally before its outcome was recorded: the entry is no longer
        in flight and due at ``when`` (not stuck in flight).  Nothing if it is not in flight."""
        if (qid, key) not in self.inflight:
            return
        envelope = self.envelopes.get(qid)
        self.inflight.release(qid, key, envelope)
        if envelope is not None:
            self.schedule(qid, key, when)

    def due_again(self, key: str, now: float) -> None:
        """What waited for a connection at ``key`` is due at ``now`` instead (the target
        went down: none will be sent), no longer in flight."""
        for qid in self.inflight.drain(key):
            self.inflight.release(qid, key, None)
            if qid in self.envelopes:
                self.schedule(qid, key, now)

    def retry_soon(self, qids: Iterable[str], key: str, when: float) -> None:
        """What a push-back left of these messages at ``key`` is due at ``when`` (not in
        flight any more: their outcome was recorded)."""
        for qid in qids:
            if self.waits_at(qid, key) and (qid, key) not in self.inflight:
                self.schedule(qid, key, when)

    def flush(self, keys: Iterable[str], now: float) -> int:
        """Make every message at ``keys`` due now, held ones aside; returns how many were
        rescheduled.  One in flight is due as soon as its outcome is recorded."""
        return sum(self.flush_some(key, self._by_target.get(key, {}), now) for key in keys)

    def flush_some(self, key: str, qids: Iterable[str], now: float) -> int:
        """``flush`` of those of ``qids`` that wait at ``key`` (a batch read after the
        target's flush: ``Scheduler.load_chunk``)."""
        waiting, flush_inflight = self._by_target.get(key, {}), self.inflight.flush
        if qids is not waiting:  # (``flush``'s own: no lookup per message of a million)
            qids = [qid for qid in qids if qid in waiting]
        chosen = [
            qid
            for qid in qids
            # held: not tried, so not flushed (nor counted as flushed)
            if qid not in self._held and not flush_inflight(qid, key)
        ]
        if chosen:
            self.due.file_all_at(key, chosen, now)
        return len(chosen)

    def resume(self, key: str, now: float) -> None:
        """Delivery to ``key`` was paused: what fell due meanwhile (taken off the due queue
        by a tick, and left) is due now; the rest is still filed at its own time.  Those in
        flight are left alone."""
        for qid in list(self._by_target.get(key, ())):
            entry = (qid, key)
            if entry not in self.due and entry not in self.inflight and qid not in self._held:
                self.schedule(qid, key, now)

    def flush_message(self, qid: str, now: float) -> None:
        """Make the message due now at each target where it waits and is not in flight."""
        for key, qids in self._by_target.items():
            if qid in qids and (qid, key) not in self.inflight:
                self.schedule(qid, key, now)
