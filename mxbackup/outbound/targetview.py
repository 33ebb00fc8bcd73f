"""The scheduler's answer to the SMTP side's questions about a route's target
(``mxbackup.health_view.TargetView``): up, down, unknown, and how many messages wait for it.

A route's target is keyed by its domain pattern (``health.target_key``).  *Up* means proven:
a session or probe worked and nothing has failed since (``Target.proven``, which
``went_down`` clears); a target the scheduler has only heard of (mail taken for it, no
attempt finished yet) is unknown.  The queue count is the backlog's per-target index: O(1).
"""

from __future__ import annotations

from typing import Any

from twisted.logger import Logger

from mxbackup.config import Route
from mxbackup.outbound.scheduler import Scheduler

log = Logger(namespace="mxbackup.scheduler")


class SchedulerView:
    def __init__(self, scheduler: Scheduler, watch: UpWatch | None = None) -> None:
        self.scheduler = scheduler
        self.watch = watch

    def is_up(self, route: Route) -> bool | None:
        """Asked by ``accept_when_target_up: false`` only: an up answer (a 450) also tells the
        watch, which checks the target soon (``UpWatch.asked``)."""
        target = self.scheduler.health.targets.get(route.domain)
        if target is None:
            return None
        if target.down:
            return False
        if not target.proven:
            return None
        if self.watch is not None:
            self.watch.asked(route.domain)
        return True

    def is_down(self, route: Route) -> bool:
        return self.scheduler.health.is_down(route.domain)

    def queued_messages(self, route: Route) -> int:
        return self.scheduler.backlog.depth(route.domain)


class UpWatch:
    """Keeps "up" true for routes with ``accept_when_target_up: false``.

    Such a route refuses mail while its target is known up, so nothing is queued for it and no
    delivery would notice the target going down: without a probe, the backup would answer
    450 for the whole outage.  So while such a target is up it is probed (connect, EHLO, QUIT;
    no flush) every ``delivery.probe_interval`` seconds, and sooner when RCPTs are refused
    for it (``asked``: at most every ``quick_check_interval``, so that a sender retrying finds
    the outage known within seconds).  A failed probe marks it down: mail is accepted again.
    ``run`` is called every ``delivery.tick`` (``rcpt_wiring``).
    """

    def __init__(self, scheduler: Scheduler, clock: Any) -> None:
        self.scheduler = scheduler
        self.clock = clock
        self._next: dict[str, float] = {}  # the next periodic probe
        self._probed: dict[str, float] = {}  # the last proof or probe we know of
        self._config: Any = None
        self._keys: list[str] = []

    def run(self) -> None:
        """Never raises (its LoopingCall would stop for good)."""
        try:
            self._run()
        except Exception:  # noqa: BLE001
            log.failure("watching the targets of accept_when_target_up: false failed")

    def _run(self) -> None:
        config = self.scheduler.config
        if config is not self._config:  # built once per configuration
            self._config = config
            self._keys = [r.domain for r in config.routes if not r.accept_when_target_up]
        now = self.clock.seconds()
        interval = self.scheduler.delivery.probe_interval
        for key in self._keys:
            if not self._watched(key):
                continue
            due = self._next.setdefault(key, now + interval)  # just proven: fresh
            self._probed.setdefault(key, now)
            if now >= due:
                self._probe(key, now)

    def asked(self, key: str) -> None:
        """A RCPT is refused because the target is up: probe it if the last proof is older
        than ``quick_check_interval`` (``probe_interval`` when quick checks are off)."""
        if not self._watched(key):
            return
        now = self.clock.seconds()
        delivery = self.scheduler.delivery
        gap = delivery.quick_check_interval or delivery.probe_interval
        if now - self._probed.setdefault(key, now) >= gap:
            self._probe(key, now)

    def _watched(self, key: str) -> bool:
        """Up (proven, not down) and no probe under way; else forgotten (unknown or down:
        mail is accepted anyway, and the scheduler probes a down target that has mail)."""
        target = self.scheduler.health.targets.get(key)
        if target is None or target.down or not target.proven:
            self._next.pop(key, None)
            self._probed.pop(key, None)
            return False
        return not target.probing

    def _probe(self, key: str, now: float) -> None:
        self._probed[key] = now
        self._next[key] = now + self.scheduler.delivery.probe_interval
        self.scheduler.probe(key)
