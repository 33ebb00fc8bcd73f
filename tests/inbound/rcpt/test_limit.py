"""Link: the recipient limit postpones (452 4.5.3), it does not refuse."""

from __future__ import annotations

from rcpt_case import candidate, transaction

from mxbackup import replies
from mxbackup.inbound.rcpt.decision import ACCEPT, Postpone
from mxbackup.inbound.rcpt.limit import RecipientLimit


def test_up_to_the_limit_then_postponed():
    limit = RecipientLimit(3)
    assert limit.decide(transaction(recipients=2), candidate("x@example.com")) is ACCEPT
    assert limit.decide(transaction(recipients=3), candidate("x@example.com")) == Postpone(
        replies.TOO_MANY_RECIPIENTS
    )


def test_repeated_recipients_count_once():
    txn = transaction(recipients=2)
    txn.add(txn.recipients[0])
    assert len(txn.recipients) == 2
    assert RecipientLimit(3).decide(txn, candidate("x@example.com")) is ACCEPT
