"""Link: routing in the address is refused from anyone."""

from __future__ import annotations

import pytest
from rcpt_case import candidate, transaction

from mxbackup import replies
from mxbackup.inbound.rcpt.decision import ACCEPT
from mxbackup.inbound.rcpt.routing import RoutingInAddress


@pytest.mark.parametrize(
    ("address", "why"),
    [
        ("u%x@example.com", "percent hack"),
        ("a!b@example.com", "bang path"),
        ("@a.test:u@example.com", "source route"),
        ("u@[127.0.0.1]", "address literal"),
    ],
)
def test_routing_refused_naming_the_trick(address, why):
    for txn in (transaction("127.0.0.1", authenticated=True), transaction("192.0.2.1")):
        assert RoutingInAddress().decide(txn, candidate(address)) == (
            replies.ROUTING_IN_ADDRESS.format(why)
        )


def test_plain_address_passes():
    assert RoutingInAddress().decide(transaction(), candidate("u@example.com")) is ACCEPT
