"""A big queue read while the server accepts mail (``queue.background``), as the scheduler
files it.

Pure: no reactor, no I/O.  A queue read before listening has every target probed at the first
tick and flushed if it answers (``Scheduler.load``).  A load in the background meets the
targets batch by batch: each is probed when the load first meets it (``Health.probe_soon``),
and once it was flushed (by that probe, a later one, or an administrator) its messages read
later are due as they come, as if they had been there for that flush; held ones and those of a
target that went down since keep their times.  When the load ends, a target it met and never
flushed (its first probe was dropped while another probe of it ran) is probed then.
"""

from __future__ import annotations

from mxbackup.outbound.backlog import Backlog
from mxbackup.outbound.health import Health
from mxbackup.queue.recovery import Chunk


class BackgroundFiling:
    def __init__(self, backlog: Backlog, health: Health) -> None:
        self.backlog = backlog
        self.health = health
        self.met: set[str] = set()  # targets the load met
        self.flushed: set[str] | None = None  # of which flushed since (None: no load runs)

    def begin(self) -> None:
        self.met, self.flushed = set(), set()

    def end(self) -> None:
        if self.flushed is not None:
            self.health.probe_soon(self.met - self.flushed)
        self.met, self.flushed = set(), None

    def note_flush(self, keys: list[str]) -> None:
        if self.flushed is not None:
            self.flushed.update(keys)

    def file(self, chunk: Chunk, now: float) -> int:
        """File ``chunk``; how many of its messages were made due now."""
        self.backlog.add_chunk(chunk, now)
        keys = set(chunk.at).union(key for _, key, _ in chunk.interrupted)
        self.health.probe_soon(keys - self.met)
        self.met |= keys
        flushed = self.flushed or set()
        due = [k for k in chunk.at if k in flushed and not self.health.get(k).down]
        return sum(self.backlog.flush_some(key, chunk.at[key][0], now) for key in due)
