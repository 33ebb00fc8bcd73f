"""The RCPT decision chain: the links, in order, built from the configuration.

Order (Postfix's ``smtpd_recipient_restrictions`` in spirit: cheap and absolute first):
routing in the address (refused from anyone), the recipient limit (before any check that costs
something), relay rules (routes, IP ranges, authentication), DNS blocklists, the route's
address list, the route's "use the primary while it is up" (before a callout would cost one),
recipient verification (cache, callout), greylisting, the route's queue quota.  The first link
that does not accept decides.  Rebuilt on every reload (``policy.Policy``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from twisted.internet.defer import Deferred

from mxbackup.config import Config
from mxbackup.inbound.access import AccessMatrix
from mxbackup.inbound.rcpt.addresslist import AddressListLink
from mxbackup.inbound.rcpt.decision import ACCEPT, Accept, Candidate, Decision, Link
from mxbackup.inbound.rcpt.dnsbl import DNSBLLink
from mxbackup.inbound.rcpt.greylisting import GreylistLink
from mxbackup.inbound.rcpt.limit import RecipientLimit
from mxbackup.inbound.rcpt.quota import QuotaLink
from mxbackup.inbound.rcpt.relay import RelayRules
from mxbackup.inbound.rcpt.routing import RoutingInAddress
from mxbackup.inbound.rcpt.services import RcptServices
from mxbackup.inbound.rcpt.targetup import TargetUpLink
from mxbackup.routes import RouteTable

if TYPE_CHECKING:
    from mxbackup.inbound.checking import Checks
    from mxbackup.inbound.transaction import Transaction


class Chain:
    """Runs its links in order; itself a link (chains nest)."""

    def __init__(self, links: Sequence[Link]) -> None:
        self.links = tuple(links)

    def decide(
        self, transaction: Transaction, recipient: Candidate
    ) -> Decision | Deferred[Decision]:
        return self._from(0, transaction, recipient)

    def _from(
        self, start: int, transaction: Transaction, recipient: Candidate
    ) -> Decision | Deferred[Decision]:
        links = self.links
        for i in range(start, len(links)):
            result = links[i].decide(transaction, recipient)
            if isinstance(result, Deferred):
                return result.addCallback(self._then, i + 1, transaction, recipient)
            if not isinstance(result, Accept):
                return result
        return ACCEPT

    def _then(
        self, result: Decision, start: int, transaction: Transaction, recipient: Candidate
    ) -> Decision | Deferred[Decision]:
        if not isinstance(result, Accept):
            return result
        return self._from(start, transaction, recipient)


def build_chain(
    config: Config,
    routes: RouteTable,
    access: AccessMatrix,
    services: RcptServices | None = None,
    checks: Checks | None = None,
) -> Chain:
    """The chain for ``config``: adding a check is one line here.  The checks' links follow
    the contract's order: relay rules, DNSBL, address list / verification, greylisting, quota."""
    s = services or RcptServices()
    dnsbl = checks.dnsbl if checks is not None else None
    greylist = checks.greylist if checks is not None else None
    links: list[Link | None] = [
        RoutingInAddress(),
        RecipientLimit(config.server.max_recipients),
        RelayRules(routes, access),
        DNSBLLink(checks, dnsbl) if checks is not None and dnsbl is not None else None,
        AddressListLink(),
        TargetUpLink(s.view, s.stats),
        s.verification,
        GreylistLink(checks, greylist) if checks is not None and greylist is not None else None,
        QuotaLink(s.view, s.stats),
    ]
    return Chain([link for link in links if link is not None])
