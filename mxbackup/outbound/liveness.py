"""Quick checks: notice within seconds that a down target is back, at the cost of a SYN.

The probe (connect, EHLO, QUIT) of a down target runs every ``delivery.probe_interval``
seconds.  Besides, during the first ``quick_check_for`` seconds of an outage, every
``quick_check_interval`` seconds (+-25 %, from the injected ``random.Random``, so that a
thousand targets that went down together do not check in step), a connect-only check
(``Dialer.reach``: TCP connect, closed at once, no SMTP) asks whether the target's port takes
connections again.  When it does, the full probe is made at once (the usual path: a usable
probe marks the target up and flushes its queue).  A check that is refused or times out
changes nothing: no log line, no try counted, no reply recorded.

At most ``CHECKS_PER_SECOND`` checks a second are made in all: with more down targets than
that budget allows at ``quick_check_interval``, each is checked less often.

At most one check or probe per target is in flight (``Target.probing`` covers both).  A
check triggers a probe only when the target's port has just become reachable (the first
connected check of the outage, or the first after one that failed): a target that takes
TCP connections but refuses SMTP (421 for hours) costs one extra probe, not one every few
seconds; its regular probes go on.

A sign of life does the same: an inbound SMTP connection from one of a down target's
addresses (``seen``, injected into the inbound side by ``service.py``) has it probed at the
next tick, at any time of the outage, at most once per ``probe_interval``.

The checks run from the scheduler's tick: their times are rounded up to the tick, but they
are kept on a jittered grid (the next check is due one interval after the previous one was
due), so the mean interval stays ``quick_check_interval``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from mxbackup.config.model import DeliveryConfig
from mxbackup.outbound.dialer import Dialer, normal_ip
from mxbackup.outbound.health import Health, Target

log = Logger(namespace="mxbackup.scheduler")

JITTER = 0.25
# Quick checks in all, a second at most: beyond CHECKS_PER_SECOND * quick_check_interval down
# targets (100 at the defaults) each is checked less often, so that a thousand dead routes
# cost 50 connection attempts a second (each checked every 20 s), not 500.
CHECKS_PER_SECOND = 50.0


@dataclass
class _Outage:
    since: float  # the target's down_since when this outage's checks began
    next_check: float
    reachable: bool = False  # the last check connected (and its probe was made)


class QuickChecks:
    def __init__(
        self,
        dialer: Dialer,
        health: Health,
        probe: Callable[[Target], None],
        rng: random.Random | None = None,
    ) -> None:
        self.dialer = dialer
        self.health = health
        self.probe = probe
        self.rng = rng or random.Random()
        self._outages: dict[str, _Outage] = {}
        self._seen: set[str] = set()  # down targets an inbound connection came from
        self._life_probed: dict[str, float] = {}  # when a sign of life last probed them
        self.checks = 0  # checks started (for tests and the manhole)

    def reconfigure(self, delivery: DeliveryConfig) -> None:
        self.interval = delivery.quick_check_interval
        self.probe_interval = delivery.probe_interval
        self.window = delivery.quick_check_for
        self.timeout = min(delivery.connect_timeout, self.interval or delivery.connect_timeout)

    def _jittered(self) -> float:
        spacing = max(self.interval, len(self._outages) / CHECKS_PER_SECOND)
        return spacing * self.rng.uniform(1 - JITTER, 1 + JITTER)

    def run(self, now: float, has_mail: Callable[[str], bool]) -> None:
        """Start the checks due at ``now`` (of down targets with mail, in their window)."""
        for target in self.due(now, has_mail):
            self._start(target, now)
        self._signs_of_life(now, has_mail)

    def seen(self, ip: str) -> None:
        """An inbound connection came from ``ip``: a down target at that address is probed
        at the next tick.  Cheap (a dict lookup): called for every inbound connection."""
        for key in self.dialer.targets_at.get(normal_ip(ip), ()):
            if self.health.is_down(key):
                self._seen.add(key)

    def _signs_of_life(self, now: float, has_mail: Callable[[str], bool]) -> None:
        seen, self._seen = self._seen, set()
        for key in seen:
            target = self.health.targets.get(key)
            if target is None or not target.down or target.probing or not has_mail(key):
                continue
            if now < self._life_probed.get(key, -math.inf) + self.probe_interval:
                continue
            self._life_probed[key] = now
            self.probe(target)

    def due(self, now: float, has_mail: Callable[[str], bool]) -> list[Target]:
        for key in [k for k in self._outages if not self.health.is_down(k)]:
            del self._outages[key]  # back up (or forgotten): that outage is over
        for key in [k for k in self._life_probed if not self.health.is_down(k)]:
            del self._life_probed[key]
        if not self.interval:
            return []
        due = []
        for target in self.health.down_targets():
            if now >= target.down_since + self.window or not has_mail(target.key):
                # Out of its window, or nothing waits for it: not checked, and not counted
                # in the budget's share (a dead bounce domain must not slow the others).
                self._outages.pop(target.key, None)
                continue
            outage = self._outages.get(target.key)
            if outage is None or outage.since != target.down_since:
                outage = _Outage(target.down_since, target.down_since + self._jittered())
                self._outages[target.key] = outage
            if not target.probing and outage.next_check <= now:
                due.append(target)
        return due

    def _start(self, target: Target, now: float) -> None:
        outage = self._outages[target.key]
        outage.next_check += self._jittered()
        if outage.next_check <= now:  # fell behind (a slow check): from now on
            outage.next_check = now + self._jittered()
        target.probing = True
        self.checks += 1
        d = defer.maybeDeferred(self.dialer.reach, target.key, self.timeout)
        d.addBoth(self._checked, target, outage)

    def _checked(self, connected: Any, target: Target, outage: _Outage) -> None:
        target.probing = False
        if not isinstance(connected, bool):  # a failure: a local error, not the target's
            log.failure("quick check of {key} failed locally", connected, key=target.key)
            connected = False
        was_reachable, outage.reachable = outage.reachable, connected
        if connected and not was_reachable and target.down:
            self.probe(target)
