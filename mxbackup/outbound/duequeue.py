"""The due queue: a timer wheel of entries, each due at a time.

Pure: no reactor, no I/O.  An entry (any hashable: the scheduler files ``(queue id, target)``)
is filed in the slot of its second; only the slots are kept in order (a heap of seconds), so
filing and taking an entry cost the same with 100 or 100,000 entries filed (a heap of every
entry costs log(n) and cache misses).  Filing an entry again supersedes its earlier time: the
old filing stays in its slot and is skipped when that slot is taken (a filing is the entry
alone, its time is looked up: a million filed cost no tuple each).  A slot keeps its
filings in runs (``_Run``): the cyclic GC's full collections visit every item of a container
it tracks, and slots holding a million ids cost each collection 27-45 ms (a queue retried
or accepted over a long outage, or flushed) -- in runs, a few thousand.

``DueByTarget`` files (queue id, target) entries in a queue per target, the id alone: the
scheduler's million waiting messages cost no entry tuple either.
"""

from __future__ import annotations

import heapq
import math
from collections import deque
from collections.abc import Callable, Hashable, Iterator

PACK = 256  # entries filed one by one in a slot are packed into a run this many at a time


class _Run:
    """Entries filed together, taken from the front: a tuple, which the cyclic GC stops
    tracking once it sees it holds only atomic objects (ids), and a cursor."""

    __slots__ = ("entries", "next")

    def __init__(self, entries: list[Hashable]) -> None:
        self.entries = tuple(entries)
        self.next = 0


class _Filings(deque):  # type: ignore[type-arg]
    """A slot's filings in filing order: entries, and runs of them.  ``loose``: entries
    appended one by one since the last packing."""

    __slots__ = ("loose",)

    def __init__(self) -> None:
        super().__init__()
        self.loose = 0


class DueQueue:
    def __init__(self) -> None:
        # second -> entries filed there, each an entry or a ``_Run`` of them
        self._slots: dict[int, _Filings] = {}
        self._in_runs = 0  # entries in the slots' runs beyond the first of each (``filed``)
        # Heap of the seconds in _slots; a second taken while the heap's top was another one
        # stays in it, stale, and is skipped when it comes up.
        self._order: list[int] = []
        self._due_at: dict[Hashable, float] = {}  # the entry's current time

    def __len__(self) -> int:
        """Entries filed (each once, whatever was superseded)."""
        return len(self._due_at)

    def __contains__(self, entry: Hashable) -> bool:
        return entry in self._due_at

    def filed(self) -> int:
        """Filings in the slots, superseded ones included (what a tick may have to look at)."""
        return sum(map(len, self._slots.values())) + self._in_runs

    def when(self, entry: Hashable) -> float | None:
        return self._due_at.get(entry)

    def schedule(self, entry: Hashable, when: float) -> None:
        """Due at ``when`` (earlier or later than before: the last filing counts)."""
        self._due_at[entry] = when
        self._file(self._slot(math.floor(when)), entry)

    def file_many(self, entries: list[Hashable], whens: list[float]) -> None:
        """``schedule`` each of ``entries`` (not filed yet) at its time (a million at
        start-up)."""
        self._due_at.update(zip(entries, whens, strict=True))
        slots = self._slots
        for entry, when in zip(entries, whens, strict=True):
            filings = slots.get(math.floor(when))
            if filings is None:
                filings = self._slot(math.floor(when))
            self._file(filings, entry)

    def file_all_at(self, entries: list[Hashable], when: float) -> None:
        """``schedule`` every one of ``entries`` at ``when`` (a flush of a million)."""
        if not entries:
            return
        for entry in entries:
            self._due_at[entry] = when
        self._slot(math.floor(when)).append(self._together(entries))

    def _slot(self, slot: int) -> _Filings:
        filings = self._slots.get(slot)
        if filings is None:
            filings = self._slots[slot] = _Filings()
            heapq.heappush(self._order, slot)
        return filings

    def _file(self, filings: _Filings, entry: Hashable) -> None:
        filings.append(entry)
        filings.loose += 1
        if filings.loose >= PACK:
            self._pack(filings)

    def _pack(self, filings: _Filings) -> None:
        """The entries at the end of ``filings`` as one run, in their order."""
        loose = []
        while filings and type(filings[-1]) is not _Run:
            loose.append(filings.pop())
        loose.reverse()
        filings.loose = 0
        if loose:
            filings.append(self._together(loose))

    def _together(self, entries: list[Hashable]) -> Hashable:
        """``entries`` (at least one) as one filing: a run, or the entry if it is alone."""
        if len(entries) == 1:
            return entries[0]
        self._in_runs += len(entries) - 1
        return _Run(entries)

    def cancel(self, entry: Hashable) -> None:
        self._due_at.pop(entry, None)

    def has_due(self, now: float) -> bool:
        """Something may be due at ``now`` (a slot is; its filings may be superseded)."""
        return bool(self._order) and self._order[0] <= now

    def pop_due(self, now: float, limit: float = math.inf) -> Iterator[Hashable]:
        """Take the entries due at ``now``, at most ``limit``, in slot order, each once: it
        is no longer filed; what is not taken stays filed, also when the caller stops early.
        Lazy: what the caller files meanwhile (due now too) is taken in the same pass.  A
        slot is consumed from its front: taking a few thousand at a time from a flush of a
        million costs what is taken, not what is left.  A nested pass (the caller's, between
        two entries; the scheduler makes none) does not see the entries of the current
        second that this pass holds back as not due yet; they are filed again when it ends."""
        taken = 0
        while taken < limit and self._order and self._order[0] <= now:
            slot = self._order[0]
            filings = self._slots.get(slot)
            later: list[Hashable] = []  # later in this second: the current one
            try:
                while filings and taken < limit:
                    entry = self._front(filings)
                    when = self._due_at.get(entry)
                    if when is None or math.floor(when) != slot:
                        continue  # taken, cancelled, or filed again in another slot
                    if when > now:
                        later.append(entry)
                        continue
                    del self._due_at[entry]
                    taken += 1
                    yield entry
            finally:
                if later:
                    self._put_back(slot, later)
            if later or filings:
                return  # the current second, or the limit reached: the slot stays
            if self._slots.get(slot) is not filings:
                continue  # a nested pass took this second and new filings came: go on
            self._slots.pop(slot, None)
            if self._order and self._order[0] == slot:
                heapq.heappop(self._order)
            # else: the caller filed an earlier second meanwhile; this one is stale now

    def _front(self, filings: _Filings) -> Hashable:
        """Take the first filing of a slot (from its first run, if it is one)."""
        entry = filings.popleft()
        if type(entry) is not _Run:
            return entry
        run, entry = entry, entry.entries[entry.next]
        run.next += 1
        if run.next < len(run.entries):
            filings.appendleft(run)  # the rest, still in order
            self._in_runs -= 1
        return entry

    def _put_back(self, slot: int, later: list[Hashable]) -> None:
        """Put ``later`` back in front of the slot's filings, in order and as one run (a flush
        taken before its time stays one object to the GC): the filings the pass took them
        from, or new ones if a nested ``pop_due`` (the caller's, between two entries) took
        the whole second meanwhile."""
        self._slot(slot).appendleft(self._together(later))


class DueByTarget:
    """Due (queue id, target) entries, in a ``DueQueue`` per target."""

    def __init__(self) -> None:
        self._queues: dict[str, DueQueue] = {}

    def __len__(self) -> int:
        return sum(map(len, self._queues.values()))

    def __contains__(self, entry: tuple[str, str]) -> bool:
        queue = self._queues.get(entry[1])
        return queue is not None and entry[0] in queue

    def filed(self) -> int:
        return sum(q.filed() for q in self._queues.values())

    def when(self, entry: tuple[str, str]) -> float | None:
        queue = self._queues.get(entry[1])
        return queue.when(entry[0]) if queue is not None else None

    def schedule(self, entry: tuple[str, str], when: float) -> None:
        self._queue(entry[1]).schedule(entry[0], when)

    def file_many(self, key: str, qids: list[str], whens: list[float]) -> None:
        self._queue(key).file_many(qids, whens)  # type: ignore[arg-type]

    def file_all_at(self, key: str, qids: list[str], when: float) -> None:
        self._queue(key).file_all_at(qids, when)  # type: ignore[arg-type]

    def _queue(self, key: str) -> DueQueue:
        queue = self._queues.get(key)
        if queue is None:
            queue = self._queues[key] = DueQueue()
        return queue

    def cancel(self, entry: tuple[str, str]) -> None:
        qid, key = entry
        queue = self._queues.get(key)
        if queue is not None:
            queue.cancel(qid)
            if not queue:
                del self._queues[key]  # and its superseded filings with it

    def has_due(self, key: str, now: float) -> bool:
        queue = self._queues.get(key)
        return queue is not None and queue.has_due(now)

    def pop_due(
        self, now: float, room: Callable[[str], float] | None = None
    ) -> Iterator[tuple[str, str]]:
        """``DueQueue.pop_due`` of each target in turn, at most ``room(target)`` of each."""
        for key, queue in list(self._queues.items()):
            limit = room(key) if room is not None else math.inf
            if limit > 0:
                for qid in queue.pop_due(now, limit):
                    yield qid, key  # type: ignore[misc]
