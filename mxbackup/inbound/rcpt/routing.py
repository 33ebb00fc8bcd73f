"""Link: an address that carries its own routing is refused, from anyone (invariant 4).

Percent hack, bang path, source route, address literal, quoted ``@``: ``address.parse_path``
names the trick; relaying such an address would let a client route mail through us.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mxbackup import replies
from mxbackup.inbound.rcpt.decision import ACCEPT, Candidate, Decision

if TYPE_CHECKING:
    from mxbackup.inbound.transaction import Transaction


class RoutingInAddress:
    def decide(self, transaction: Transaction, recipient: Candidate) -> Decision:
        routing = recipient.mailbox.routing
        if routing is None:
            return ACCEPT
        return replies.ROUTING_IN_ADDRESS.format(routing)
