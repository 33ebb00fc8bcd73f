"""The transaction's recipient list: one entry per mailbox."""

from mxbackup.inbound.transaction import Transaction
from mxbackup.queue.envelope import Recipient


def transaction() -> Transaction:
    return Transaction("127.0.0.9", "c.test", False, None, {"SMTPUTF8": None})


def test_a_mailbox_spelled_with_u_labels_and_a_labels_is_kept_once():
    """Regression (issue 13): ``x@müller.example`` and ``x@xn--mller-kva.example`` were kept
    twice, and delivered twice."""
    txn = transaction()
    for address in ("ü@müller.example", "ü@xn--mller-kva.example", "Ü@MÜLLER.example"):
        txn.add(Recipient(address, "xn--mller-kva.example"))
    assert [r.address for r in txn.recipients] == ["ü@müller.example"]


def test_repeats_are_compared_without_case_and_others_kept_in_order():
    txn = transaction()
    for address in ("a@example.com", "b@example.com", "A@Example.COM", "a@example.org"):
        txn.add(Recipient(address, None))
    assert [r.address for r in txn.recipients] == [
        "a@example.com",
        "b@example.com",
        "a@example.org",
    ]
