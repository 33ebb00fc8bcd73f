"""Link: a route's address list (``addresses:`` in the route; "all" when absent).  A recipient
of a routed domain that the list does not name is refused as unknown (550 5.1.1); relayed
recipients (no route) are not this link's business."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mxbackup import replies
from mxbackup.inbound.rcpt.decision import ACCEPT, Candidate, Decision

if TYPE_CHECKING:
    from mxbackup.inbound.transaction import Transaction


class AddressListLink:
    def decide(self, transaction: Transaction, recipient: Candidate) -> Decision:
        route = recipient.route
        if route is None or route.addresses.allows(recipient.address):
            return ACCEPT
        return replies.UNKNOWN_USER.format(recipient.address)
