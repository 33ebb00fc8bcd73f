"""Link: at most ``server.max_recipients`` recipients per transaction.

Beyond it the client gets 452 4.5.3 and sends the rest in another transaction (RFC 5321
4.5.3.1.10): a ``Postpone``, not a refusal.  Early in the chain, so no costly check runs for a
recipient that cannot be taken anyway.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mxbackup import replies
from mxbackup.inbound.rcpt.decision import ACCEPT, Candidate, Decision, Postpone

if TYPE_CHECKING:
    from mxbackup.inbound.transaction import Transaction

_TOO_MANY = Postpone(replies.TOO_MANY_RECIPIENTS)


class RecipientLimit:
    def __init__(self, max_recipients: int) -> None:
        self.max_recipients = max_recipients

    def decide(self, transaction: Transaction, recipient: Candidate) -> Decision:
        if len(transaction.recipients) >= self.max_recipients:
            return _TOO_MANY
        return ACCEPT
