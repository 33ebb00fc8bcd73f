"""Tries at a target that is down, paced (``Scheduler``).

Such a try makes no connection: the message's count goes up in memory and a line is logged
(``Recorder.fail_untried``, ~50-100 µs).  A million queued behind a dead primary fall due
about a thousand a second with the default 15 minutes between retries.  The clock's tick
takes ``PER_TICK`` of a down target's due tries, ``PER_TURN`` per turn of the reactor, so
clients are served between the turns (a thousand in one turn stalled every connection for
~60-100 ms each second); the ticks that arrivals ask for take none of them.

No reactor import: the clock is injected.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.logger import Logger

log = Logger(namespace="mxbackup.scheduler")

# Per target that is down (a turn with several takes a share of each); PER_TICK is meant to
# be a multiple of PER_TURN (a remainder is not taken).
PER_TICK = 1_000  # a down target's due tries taken per tick of the clock
PER_TURN = 100  # ... of which one turn of the reactor takes at most


class DownPace:
    def __init__(self, clock: Any, take: Callable[[], bool]) -> None:
        """``take``: one turn's share of every down target's due tries; True if a target's
        share was full (there may be more)."""
        self.clock = clock
        self._take = take
        self.later = False  # in a later turn of a tick: the tries at down targets only
        self._call: Any = None  # that turn, while one is to come

    @staticmethod
    def per_turn() -> int:
        """A down target's share of one turn."""
        return min(PER_TURN, PER_TICK)

    def share(self, extra: bool) -> int:
        """A down target's share of this turn (of a tick an arrival asked for: none)."""
        return 0 if extra else self.per_turn()

    def full(self, untried: dict[str, int]) -> bool:
        """Whether a target took its whole share (``untried``: tries taken per target)."""
        return any(n >= self.per_turn() for n in untried.values())

    def ticked(self, full: bool) -> None:
        """The clock's tick took the first share; the rest of the tick's in the next turns
        (what an earlier tick left to come is dropped: one tick's share at a time)."""
        self.stop()
        if full:
            self._next(max(1, PER_TICK // PER_TURN) - 1)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _next(self, left: int) -> None:
        if left > 0:
            self._call = self.clock.callLater(0, self._turn, left)

    def _turn(self, left: int) -> None:
        self._call, self.later = None, True
        try:
            full = self._take()
        except Exception:  # noqa: BLE001 (as a tick: the next one takes the rest)
            log.failure("scheduler: tries at a target that is down failed")
            return
        finally:
            self.later = False
        if full:
            self._next(left - 1)
