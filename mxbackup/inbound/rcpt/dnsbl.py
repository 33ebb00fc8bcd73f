"""Link: DNS blocklists.  A client listed in a ``checks.dnsbl`` zone gets ``554 5.7.1`` naming
the zone (and the zone's TXT reason); postmaster at our own host name stays reachable (RFC 5321
4.5.1), exempt and authenticated clients are not asked about.  The lookups started at connect
(``checking.Checks.connected``), so this usually answers from the cache without waiting; a
DNS failure or timeout lists nobody (``checks.dnsbl``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mxbackup import replies
from mxbackup.checks.dnsbl import DNSBL, Listing
from mxbackup.inbound.rcpt.decision import ACCEPT, Candidate, Decision

if TYPE_CHECKING:
    from mxbackup.inbound.checking import Checks
    from mxbackup.inbound.transaction import Transaction

log = Logger(namespace="mxbackup.checks")


def is_postmaster(recipient: Candidate, hostname: str) -> bool:
    mailbox = recipient.mailbox
    return mailbox.local.lower() == "postmaster" and (
        mailbox.domain.lower().rstrip(".") in ("", hostname.lower())
    )


class DNSBLLink:
    def __init__(self, checks: Checks, dnsbl: DNSBL) -> None:
        self.checks = checks
        self.dnsbl = dnsbl

    def decide(self, transaction: Transaction, recipient: Candidate) -> Any:
        if self.checks.exempt(transaction) or is_postmaster(recipient, self.checks.hostname):
            return ACCEPT
        found = self.dnsbl.listed(transaction.client_ip)
        if isinstance(found, Deferred):
            return found.addCallback(self._decision, transaction)
        return self._decision(found, transaction)

    def _decision(self, found: Listing | None, transaction: Transaction) -> Decision:
        if found is None:
            return ACCEPT
        self.checks.refused("dnsbl")
        log.info(
            "dnsbl listed client={ip} zone={zone} answer={answer} reason={reason!r}",
            ip=transaction.client_ip,
            zone=found.zone,
            answer=found.answer,
            reason=found.reason,
        )
        reason = f": {found.reason}" if found.reason else ""
        return replies.DNSBL_LISTED.format(transaction.client_ip, found.zone, reason)
