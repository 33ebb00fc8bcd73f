"""The backlog: every queued message, by id and by target, when each is due, what is in
flight.

Pure: no reactor, no I/O; times are passed in.  It keeps its structures in step (a message
and its targets, the due queue, the in-flight registry), so the scheduler, the recording of
outcomes and the queue administration change them only through it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator

from mxbackup.outbound.duequeue import DueQueue
from mxbackup.outbound.health import target_key
from mxbackup.outbound.inflight import Entry, InFlight
from mxbackup.queue.envelope import Envelope, Recipient


def pending_by_target(envelope: Envelope) -> dict[str, list[Recipient]]:
    groups: dict[str, list[Recipient]] = defaultdict(list)
    for rcpt in envelope.recipients:
        if rcpt.state == "pending":
            groups[target_key(rcpt)].append(rcpt)
    return groups


class Backlog:
    def __init__(self) -> None:
        self.envelopes: dict[str, Envelope] = {}  # the queue, by id
        self.due = DueQueue()  # of entries (queue id, target)
        self.inflight = InFlight()
        self._by_target: dict[str, set[str]] = defaultdict(set)

    # -- what is queued ------------------------------------------------------------------------
    def add(self, envelope: Envelope, now: float) -> None:
        """A message entered the queue (accepted, or loaded at start-up): schedule it at each
        of its targets.  An attempt a crash interrupted (``inflight`` on disk) is due now."""
        self.envelopes[envelope.id] = envelope
        for key, rcpts in pending_by_target(envelope).items():
            self._by_target[key].add(envelope.id)
            when = min(now if r.inflight else r.next_attempt for r in rcpts)
            self.due.schedule((envelope.id, key), when)

    def forget(self, envelope: Envelope) -> None:
        """The message left the queue (done, or deleted)."""
        self.envelopes.pop(envelope.id, None)
        for rcpt in envelope.recipients:
            key = target_key(rcpt)
            self._by_target[key].discard(envelope.id)
            self.due.cancel((envelope.id, key))
            if not self._by_target[key]:
                del self._by_target[key]

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

    def depth_by_target(self) -> dict[str, int]:
        return {key: len(qids) for key, qids in self._by_target.items() if qids}

    def oldest_age(self, now: float) -> float:
        if not self.envelopes:
            return 0.0
        return now - min(e.received_at for e in self.envelopes.values())

    # -- when ----------------------------------------------------------------------------------
    def due_now(self, now: float) -> Iterator[Entry]:
        """The entries due at ``now``, except those in flight (already being tried)."""
        for entry in self.due.pop_due(now):
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
        else:
            self._by_target[key].discard(envelope.id)

    def requeue(self, qid: str, key: str, when: float) -> None:
        """Something failed locally before its outcome was recorded: the entry is no longer
        in flight and due at ``when`` (not stuck in flight).  Nothing if it is not in flight."""
        if (qid, key) not in self.inflight:
            return
        envelope = self.envelopes.get(qid)
        self.inflight.release(qid, key, envelope)
        if envelope is not None:
            self.schedule(qid, key, when)

    def retry_soon(self, qids: Iterable[str], key: str, when: float) -> None:
        """What a push-back left of these messages at ``key`` is due at ``when`` (not in
        flight any more: their outcome was recorded)."""
        for qid in qids:
            envelope, rcpts = self.pending(qid, key)
            if envelope is not None and rcpts and (qid, key) not in self.inflight:
                self.schedule(qid, key, when)

    def flush(self, keys: Iterable[str], now: float) -> int:
        """Make every message at ``keys`` due now, held ones aside; returns how many were
        rescheduled.  One in flight is due as soon as its outcome is recorded."""
        count = 0
        for key in keys:
            for qid in list(self._by_target.get(key, ())):
                envelope = self.envelopes.get(qid)
                if envelope is not None and envelope.held:
                    continue  # held: not tried, so not flushed (nor counted as flushed)
                if not self.inflight.flush(qid, key):
                    self.schedule(qid, key, now)
                    count += 1
        return count

    def resume(self, key: str, now: float) -> None:
        """Delivery to ``key`` was paused: file each of its messages at its own next attempt
        again (what fell due meanwhile is due now).  Those in flight are left alone."""
        for qid in list(self._by_target.get(key, ())):
            envelope, rcpts = self.pending(qid, key)
            if envelope is not None and rcpts and (qid, key) not in self.inflight:
                self.schedule(qid, key, min(now if r.inflight else r.next_attempt for r in rcpts))

    def flush_message(self, envelope: Envelope, now: float) -> None:
        """Make the message due now at each target where it is not in flight."""
        for key in pending_by_target(envelope):
            if (envelope.id, key) not in self.inflight:
                self.schedule(envelope.id, key, now)
