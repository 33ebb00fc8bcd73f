"""The scheduler's answer to the SMTP side's questions about a route's target
(``mxbackup.health_view.TargetView``): up, down, unknown, and how many messages wait for it.

A route's target is keyed by its domain pattern (``health.target_key``).  *Up* means proven:
a session or probe worked and nothing has failed since (``Target.proven``, which
``went_down`` clears); a target the scheduler has only heard of (mail taken for it, no
attempt finished yet) is unknown.  The queue count is the backlog's per-target index: O(1).
"""

from __future__ import annotations

from mxbackup.config import Route
from mxbackup.outbound.scheduler import Scheduler


class SchedulerView:
    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler

    def is_up(self, route: Route) -> bool | None:
        target = self.scheduler.health.targets.get(route.domain)
        if target is None:
            return None
        if target.down:
            return False
        return True if target.proven else None

    def is_down(self, route: Route) -> bool:
        return self.scheduler.health.is_down(route.domain)

    def queued_messages(self, route: Route) -> int:
        return self.scheduler.backlog.depth(route.domain)
