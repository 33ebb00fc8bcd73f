"""The due queue: a timer wheel of entries, each due at a time.

Pure: no reactor, no I/O.  An entry (any hashable: the scheduler files ``(queue id, target)``)
is filed in the slot of its second; only the slots are kept in order (a heap of seconds), so
filing and taking an entry cost the same with 100 or 100,000 entries filed (a heap of every
entry costs log(n) and cache misses).  Filing an entry again supersedes its earlier time: the
old filing stays in its slot and is skipped when that slot is taken.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Hashable, Iterator


class DueQueue:
    def __init__(self) -> None:
        self._slots: dict[int, list[tuple[float, Hashable]]] = {}  # second -> filings
        self._order: list[int] = []  # heap of the seconds in _slots
        self._due_at: dict[Hashable, float] = {}  # the entry's current time

    def __len__(self) -> int:
        """Entries filed (each once, whatever was superseded)."""
        return len(self._due_at)

    def __contains__(self, entry: Hashable) -> bool:
        return entry in self._due_at

    def filed(self) -> int:
        """Filings in the slots, superseded ones included (what a tick may have to look at)."""
        return sum(map(len, self._slots.values()))

    def when(self, entry: Hashable) -> float | None:
        return self._due_at.get(entry)

    def schedule(self, entry: Hashable, when: float) -> None:
        """Due at ``when`` (earlier or later than before: the last filing counts)."""
        self._due_at[entry] = when
        slot = math.floor(when)
        filings = self._slots.get(slot)
        if filings is None:
            filings = self._slots[slot] = []
            heapq.heappush(self._order, slot)
        filings.append((when, entry))

    def cancel(self, entry: Hashable) -> None:
        self._due_at.pop(entry, None)

    def pop_due(self, now: float) -> Iterator[Hashable]:
        """Take every entry due at ``now``, in slot order, each once: it is no longer filed.
        Lazy: what the caller files meanwhile (due now too) is taken in the same pass."""
        while self._order and self._order[0] <= now:
            slot = heapq.heappop(self._order)
            later = []
            for filing in self._slots.pop(slot):
                when, entry = filing
                if when > now:
                    later.append(filing)  # later in this second
                    continue
                if self._due_at.get(entry) != when:
                    continue  # superseded by a later filing (or cancelled)
                del self._due_at[entry]
                yield entry
            if later:
                if slot in self._slots:  # filed again meanwhile
                    self._slots[slot].extend(later)
                else:
                    self._slots[slot] = later
                    heapq.heappush(self._order, slot)
                return
