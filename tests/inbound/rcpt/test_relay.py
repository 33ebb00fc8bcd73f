"""Link: relay rules from the routes, the IP ranges and authentication."""

from __future__ import annotations

import ipaddress

from rcpt_case import CONFIG, ROUTES, candidate, transaction

from mxbackup import replies
from mxbackup.config import ALL_ALLOWED, NO_AUTH, IPRange, Matrix
from mxbackup.inbound.access import AccessMatrix
from mxbackup.inbound.rcpt.decision import ACCEPT
from mxbackup.inbound.rcpt.relay import RelayRules

RELAY = RelayRules(ROUTES, AccessMatrix(CONFIG.ip_ranges))  # the default ranges


def test_routed_domain_from_the_internet():
    assert RELAY.decide(transaction("192.0.2.1"), candidate("u@example.com")) is ACCEPT


def test_unrouted_domain_is_relay_denied_naming_the_domain():
    assert RELAY.decide(transaction("192.0.2.1"), candidate("u@Elsewhere.test")) == (
        replies.RELAY_DENIED.format("elsewhere.test")
    )


def test_authenticated_or_trusted_clients_may_relay():
    assert RELAY.decide(transaction("192.0.2.1", authenticated=True), candidate("u@x.test")) is (
        ACCEPT
    )
    assert RELAY.decide(transaction("127.0.0.1"), candidate("u@x.test")) is ACCEPT
    assert RELAY.decide(transaction("::1", sender=None), candidate("u@x.test")) is ACCEPT


def test_a_routed_refusal_says_why():
    closed = IPRange(
        "closed",
        (ipaddress.ip_network("0.0.0.0/0"),),
        Matrix(True, True, False, True),  # external -> local not allowed
        NO_AUTH,
    )
    relay = RelayRules(ROUTES, AccessMatrix([closed]))
    assert relay.decide(transaction(), candidate("u@example.com")) == replies.DELIVERY_NOT_ALLOWED
    needs_auth = IPRange("auth", closed.networks, ALL_ALLOWED, Matrix(False, False, True, False))
    relay = RelayRules(ROUTES, AccessMatrix([needs_auth]))
    assert relay.decide(transaction(), candidate("u@example.com")) == replies.AUTH_REQUIRED
    assert relay.decide(transaction(authenticated=True), candidate("u@example.com")) is ACCEPT
