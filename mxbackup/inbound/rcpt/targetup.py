"""Link: ``accept_when_target_up: false``.  While the scheduler knows the route's target is up
(its last probe or delivery worked and nothing failed since), RCPT gets 450 4.7.1: the sender
should use the primary, and retries it.  The moment it is known down, mail is accepted (no
mail is queued for it meanwhile, so ``outbound.targetview.UpWatch`` probes such a target every
``probe_interval`` while it is up: a failed probe is how its outage becomes known).

Unknown (just started, never tried): accepted.  Refusing then would turn mail away on the
strength of no evidence, and the sender's retry might come while the primary is in fact down;
the first delivery or probe (which start-up makes for targets with queued mail) settles it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mxbackup import replies
from mxbackup.health_view import TargetView
from mxbackup.inbound.rcpt.decision import ACCEPT, Candidate, Decision
from mxbackup.stats import Stats

if TYPE_CHECKING:
    from mxbackup.inbound.transaction import Transaction


class TargetUpLink:
    def __init__(self, view: TargetView, stats: Stats) -> None:
        self.view = view
        self.stats = stats

    def decide(self, transaction: Transaction, recipient: Candidate) -> Decision:
        route = recipient.route
        if route is None or route.accept_when_target_up or self.view.is_up(route) is not True:
            return ACCEPT
        self.stats.refusals["target_up"] += 1
        return replies.USE_PRIMARY.format(route.domain)
