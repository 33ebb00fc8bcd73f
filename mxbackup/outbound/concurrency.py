"""How many connections a target gets at once: additive increase, multiplicative decrease.

Pure: no reactor, times passed in.  A target that is not proven gets one connection (slow
start, ``health``).  A proven one starts at the ceiling (``delivery.max_connections_per_target``)
and keeps it while it takes what we send.  When it pushes back while it is up (a primary that
just came back and limits itself: ``421`` at the greeting beyond N connections, ``451 4.7.x``
or ``452`` replies, a connection reset in the middle of the drain), its window is halved
(once per ``HOLD`` seconds: the connections of one burst all fail together, and count once)
and the mail that session did not deliver is tried again ``RETRY_SOON`` after, within the
smaller window, without counting a retry, instead of the target being marked down and
waiting for a probe.  Each session that goes
through adds 1/window (one connection more per round of the window's sessions, as TCP's
congestion avoidance does: adding one per session refilled a window of 4 in one round and
hit the limit again at once), up to the ceiling.  A push-back at the floor (one
connection) is an outage after all: the caller marks the target down as before.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from mxbackup.wire.contract import Attempt, JobResult

HOLD = 1.0  # seconds: push-backs within this of a cut belong to the same burst
FLOOR = 1.0
RETRY_SOON = 1.0  # seconds: what a push-back left is tried again this soon (not counted)

# what says "fewer connections, please": a 421 anywhere, 452 (resources), 451 4.7.x (rate
# or policy limits), a connection reset or lost in the middle of a session
_PUSH_BACK = re.compile(
    r"(?:^|[\s:])(?:421|452)(?:[\s-]|$)|(?:^|[\s:])451[ -]4\.7\.|ConnectionLost|"
    r"ConnectionReset|[Cc]onnection reset|connection closed by the target"
)


def pushed_back(text: str) -> bool:
    return bool(_PUSH_BACK.search(text))


def throttled(results: Iterable[JobResult | None]) -> bool:
    """Some recipient got a 421, 452 or 451 4.7.x in a session that otherwise worked."""
    for result in results:
        if result is None:
            continue
        for outcome in result.outcomes.values():
            reply = f"{outcome.code} {outcome.text}"
            if outcome.kind == "tempfail" and outcome.code and pushed_back(reply):
                return True
    return False


class Concurrency:
    def __init__(self, hold: float = HOLD) -> None:
        self.hold = hold
        self._window: dict[str, float] = {}  # targets below the ceiling, and their window
        self._cut_at: dict[str, float] = {}

    def limit(self, key: str, proven: bool, ceiling: int) -> int:
        """Connections allowed at once now."""
        if not proven:
            return 1
        window = self._window.get(key)
        return ceiling if window is None else max(1, min(ceiling, int(window)))

    def window(self, key: str) -> float | None:
        """The window of a target below its ceiling (None: at the ceiling)."""
        return self._window.get(key)

    def observe(
        self,
        key: str,
        attempt: Attempt,
        results: Iterable[JobResult | None],
        active: int,
        ceiling: int,
        now: float,
    ) -> bool:
        """What a session with mail showed (``active``: connections open, this one included).
        True: a push-back while the target is up, absorbed (the window was halved: try the
        rest again within it).  False: the caller's usual rules (it went through: one more
        connection allowed; some recipients were told to wait at the floor: their usual
        retry; or nothing to absorb: the target is down)."""
        worked = attempt.connected and not attempt.broken
        if worked and not throttled(results):
            self._grow(key, ceiling)
            return False
        if worked:  # it took mail, and said "slower" for some: no outage either way
            return self._cut(key, active, ceiling, now)
        return pushed_back(attempt.error) and self._cut(key, active, ceiling, now)

    def _grow(self, key: str, ceiling: int) -> None:
        window = self._window.get(key)
        if window is None:
            return
        window += 1.0 / window  # one more connection per round of sessions that went through
        if window >= ceiling:
            del self._window[key]
        else:
            self._window[key] = window

    def _cut(self, key: str, active: int, ceiling: int, now: float) -> bool:
        """Halve the window (from what was in use); False when it was at the floor."""
        if now < self._cut_at.get(key, float("-inf")) + self.hold:
            return True  # the same burst: counted once
        window = min(self._window.get(key, float(ceiling)), float(max(active, 1)))
        if window <= FLOOR:
            return False
        self._window[key] = max(FLOOR, window * 0.5)
        self._cut_at[key] = now
        return True

    def forget(self, keys: Iterable[Any]) -> None:
        for key in keys:
            self._window.pop(key, None)
            self._cut_at.pop(key, None)
