"""Link: ``max_queued_messages``, the route's quota.  When the queue holds that many messages
for the route's target, RCPT gets 452 4.3.1 (the sender retries later); other routes are not
affected.  The count is the scheduler's (O(1) to read), so the link costs nothing per RCPT.
Last in the chain: only a recipient that would otherwise be taken is counted against it."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mxbackup import replies
from mxbackup.health_view import TargetView
from mxbackup.inbound.rcpt.decision import ACCEPT, Candidate, Decision
from mxbackup.stats import Stats

if TYPE_CHECKING:
    from mxbackup.inbound.transaction import Transaction


class QuotaLink:
    def __init__(self, view: TargetView, stats: Stats) -> None:
        self.view = view
        self.stats = stats

    def decide(self, transaction: Transaction, recipient: Candidate) -> Decision:
        route = recipient.route
        if route is None or route.max_queued_messages <= 0:
            return ACCEPT
        if self.view.queued_messages(route) < route.max_queued_messages:
            return ACCEPT
        self.stats.refusals["route_quota"] += 1
        return replies.ROUTE_QUEUE_FULL.format(route.domain)
