"""Link: a route's address list."""

from __future__ import annotations

from rcpt_case import candidate, transaction

from mxbackup import replies
from mxbackup.inbound.rcpt.addresslist import AddressListLink
from mxbackup.inbound.rcpt.decision import ACCEPT

LINK = AddressListLink()


def test_listed_addresses_pass_whatever_their_case():
    assert LINK.decide(transaction(), candidate("alice@sub.example.org")) is ACCEPT
    assert LINK.decide(transaction(), candidate("ALICE@Sub.Example.ORG")) is ACCEPT
    assert LINK.decide(transaction(), candidate("bob@sub.example.org")) is ACCEPT


def test_unlisted_address_of_a_listed_route_is_unknown():
    assert LINK.decide(transaction(), candidate("carol@sub.example.org")) == (
        replies.UNKNOWN_USER.format("carol@sub.example.org")
    )


def test_route_without_list_and_relayed_recipients_pass():
    assert LINK.decide(transaction(), candidate("anyone@example.com")) is ACCEPT
    assert LINK.decide(transaction(), candidate("x@elsewhere.test")) is ACCEPT
