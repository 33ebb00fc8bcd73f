"""Link: relay rules.  The client's IP range (``access.AccessMatrix``) says, for the pair
(sender kind -> recipient kind), whether delivery is allowed and whether it needs AUTH; the
kinds come from the routes.  A domain no route names is refused as relaying unless the range
allows it (invariant 4 in the design, for untrusted clients)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mxbackup import replies
from mxbackup.inbound.access import AccessMatrix
from mxbackup.inbound.rcpt.decision import ACCEPT, Candidate, Decision
from mxbackup.routes import RouteTable

if TYPE_CHECKING:
    from mxbackup.inbound.transaction import Transaction


class RelayRules:
    def __init__(self, routes: RouteTable, access: AccessMatrix) -> None:
        self.routes = routes
        self.access = access

    def decide(self, transaction: Transaction, recipient: Candidate) -> Decision:
        route = recipient.route
        sender = transaction.sender
        refusal = self.access.decide(
            transaction.client_ip,
            transaction.authenticated,
            self.routes.sender_kind(sender.domain if sender is not None else None),
            route.treat_recipient_as if route is not None else "external",
        )
        if refusal is None:
            return ACCEPT
        if route is None:
            return replies.RELAY_DENIED.format(recipient.mailbox.domain)
        return refusal
