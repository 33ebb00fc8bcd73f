"""Link: greylisting (``checks.greylisting``).  After the address list and verification, so a
recipient we would refuse anyway costs no triplet; before the quota.  Exempt and
authenticated clients skip it; a first try gets ``450 4.7.1``; a state store that cannot
answer lets the recipient through (``checks.greylist``)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.logger import Logger

from mxbackup import replies
from mxbackup.checks.greylist import Greylist
from mxbackup.inbound.rcpt.decision import ACCEPT, Candidate, Decision

if TYPE_CHECKING:
    from mxbackup.inbound.checking import Checks
    from mxbackup.inbound.transaction import Transaction

log = Logger(namespace="mxbackup.checks")


class GreylistLink:
    def __init__(self, checks: Checks, greylist: Greylist) -> None:
        self.checks = checks
        self.greylist = greylist

    def decide(self, transaction: Transaction, recipient: Candidate) -> Any:
        if self.checks.exempt(transaction):
            return ACCEPT
        d = self.greylist.passes(transaction.client_ip, transaction.sender_text, recipient.address)
        return d.addCallback(self._decision, transaction, recipient)

    def _decision(self, passes: bool, transaction: Transaction, recipient: Candidate) -> Decision:
        if passes:
            return ACCEPT
        self.checks.refused("greylisting")
        log.info(
            "greylisted client={ip} from=<{sender}> rcpt=<{rcpt}>",
            ip=transaction.client_ip,
            sender=transaction.sender_text,
            rcpt=recipient.address,
        )
        return replies.GREYLISTED
