"""Target health: which targets take mail, which are down, when to probe them.

Pure: no reactor, no I/O; times are passed in.  A target is a route's domain pattern, or
``mx:<domain>`` for mail delivered by MX lookup.  When a session to it fails, the target is
*down*: mail that falls due meanwhile counts a failed try without connecting, and one cheap
probe (connect, EHLO, QUIT) every ``probe_interval`` checks whether it is back (and, early in
the outage, quick connect-only checks: ``liveness``).  Until a
session or probe has worked since it was last down, it is not *proven*: one connection at a
time (slow start), so an unknown or dead target does not cost a full set of connections, each
with its batch of envelope writes.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from mxbackup.outbound.reasons import Reasons
from mxbackup.queue.envelope import Recipient, key_for


def target_key(rcpt: Recipient) -> str:
    """The target a recipient is delivered to: its route, or its domain's MX hosts."""
    return key_for(rcpt.route, rcpt.address)


@dataclass
class Target:
    key: str
    down_since: float = 0.0  # 0: up (or not known to be down)
    next_probe: float = 0.0
    last_error: str = ""
    active: int = 0  # connections open now
    probing: bool = False
    proven: bool = False  # known to take mail now: the full connection limit applies

    @property
    def down(self) -> bool:
        return self.down_since > 0

    def limit(self, max_connections: int) -> int:
        """Connections allowed at once: one until the target is proven (slow start)."""
        return max_connections if self.proven else 1

    def went_up(self) -> bool:
        """A session or probe worked.  True if the target was down until now."""
        was_down = self.down
        self.proven = True
        self.down_since = 0.0
        self.last_error = ""
        return was_down

    def went_down(self, error: str, now: float, probe_interval: float) -> bool:
        """A session or probe failed.  True if the target was up until now."""
        newly = not self.down
        self.proven = False
        if newly:
            self.down_since = now
        self.last_error = error
        self.next_probe = now + probe_interval
        return newly

    def probe_due(self, now: float) -> bool:
        return self.down and not self.probing and self.next_probe <= now


class Health:
    """Every target seen so far, and the probes to make."""

    def __init__(self) -> None:
        self.targets: dict[str, Target] = {}
        self._startup: set[str] = set()
        self.reasons = Reasons()  # failures by kind (metrics), the log lines' pacing
        # where each target was last found (route targets, and use_mx routes' MX hosts):
        # set by the dialer, read by the inbound side through this view
        self.resolved: Mapping[str, frozenset[str]] = {}

    def get(self, key: str) -> Target:
        target = self.targets.get(key)
        if target is None:
            target = self.targets[key] = Target(key)
        return target

    def is_up(self, key: str) -> bool:
        """Known and not down (an unknown target is neither)."""
        target = self.targets.get(key)
        return target is not None and not target.down

    def is_down(self, key: str) -> bool:
        target = self.targets.get(key)
        return target is not None and target.down

    def reason(self, key: str) -> str:
        """Why mail for ``key`` waits: its last failed attempt or probe ("" while it works)."""
        target = self.targets.get(key)
        return target.last_error if target is not None and target.down else ""

    def down_since(self, key: str) -> float | None:
        """When ``key`` went down (None: not known to be down)."""
        target = self.targets.get(key)
        return target.down_since if target is not None and target.down else None

    def addresses(self, key: str) -> frozenset[str]:
        """The addresses route ``key``'s targets were last found at (its hosts, or for
        ``use_mx`` its domain's MX hosts more preferred than we are); empty until the first
        connection or check."""
        return self.resolved.get(key, frozenset())

    def failed(self, target: Target, error: str, now: float, probe_interval: float) -> bool:
        """A session or probe to ``target`` failed (``error``: why): it is down.  True when
        the reason is worth a log line (new, or not logged for a few minutes)."""
        target.went_down(error, now, probe_interval)
        return self.reasons.failed(target.key, error, now)

    def worked(self, target: Target) -> bool:
        """A session or probe worked.  True if the target was down until now."""
        self.reasons.cleared(target.key)
        return target.went_up()

    def down_targets(self) -> list[Target]:
        return [target for target in self.targets.values() if target.down]

    def probe_at_start(self, keys: Iterable[str]) -> None:
        """Targets with mail at start-up: each is probed at the first tick."""
        self._startup = set(keys)

    def probe_soon(self, keys: Iterable[str]) -> None:
        """Targets met while a big queue is read: probed at the next tick, as at start-up."""
        self._startup.update(keys)

    def startup_probes(self) -> Iterator[Target]:
        """The start-up probes still to make (each once), of targets neither probing nor
        down.  Lazy: the caller starts each probe before the next is looked at."""
        while self._startup:
            target = self.get(self._startup.pop())
            if not target.probing and not target.down:
                yield target

    def due_probes(self, now: float) -> Iterator[Target]:
        """Down targets whose next probe is due (lazy, like ``startup_probes``)."""
        for target in list(self.targets.values()):
            if target.probe_due(now):
                yield target

    def flushed(self, keys: Iterable[str], now: float) -> None:
        """A flush of ``keys``: a down target among them is probed first (a success flushes
        again)."""
        for key in keys:
            target = self.targets.get(key)
            if target is not None and target.down:
                target.next_probe = now
