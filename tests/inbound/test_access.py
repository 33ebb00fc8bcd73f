"""The IP-range matrix: the longest prefix decides; allow and require_auth per kind pair."""

from __future__ import annotations

import ipaddress

from mxbackup import replies
from mxbackup.config import ALL_ALLOWED, DEFAULT_IP_RANGES, NO_AUTH, IPRange, Matrix
from mxbackup.inbound.access import AccessMatrix

NOTHING = Matrix(False, False, False, False)


def ip_range(name: str, *nets: str, allow: Matrix = ALL_ALLOWED, auth: Matrix = NO_AUTH):
    return IPRange(name, tuple(ipaddress.ip_network(n) for n in nets), allow, auth)


def test_longest_prefix_wins_whatever_the_order():
    matrix = AccessMatrix(
        [ip_range("wide", "10.0.0.0/8"), ip_range("narrow", "10.1.0.0/16"), ip_range("v6", "::/0")]
    )
    assert matrix.range_for("10.1.2.3").name == "narrow"
    assert matrix.range_for("10.2.0.1").name == "wide"
    assert matrix.range_for("192.0.2.1") is None
    assert matrix.range_for("2001:db8::1").name == "v6"


def test_ipv4_mapped_and_scoped_addresses():
    matrix = AccessMatrix([ip_range("v4", "192.0.2.0/24"), ip_range("link", "fe80::/10")])
    assert matrix.range_for("::ffff:192.0.2.7").name == "v4"
    assert matrix.range_for("fe80::1%eth0").name == "link"
    assert matrix.range_for("not an address") is None


def test_default_ranges():
    matrix = AccessMatrix(DEFAULT_IP_RANGES)
    # loopback: everything, no AUTH
    assert matrix.decide("127.0.0.1", False, "external", "external") is None
    assert matrix.decide("::1", False, "local", "external") is None
    # the Internet: only mail from outside to our routes without AUTH
    assert matrix.decide("192.0.2.1", False, "external", "local") is None
    assert matrix.decide("192.0.2.1", False, "external", "external") == replies.AUTH_REQUIRED
    assert matrix.decide("192.0.2.1", True, "external", "external") is None
    assert matrix.decide("192.0.2.1", False, "local", "local") == replies.AUTH_REQUIRED


def test_not_allowed_and_unknown_ranges_are_refused():
    matrix = AccessMatrix([ip_range("closed", "192.0.2.0/24", allow=NOTHING)])
    assert matrix.decide("192.0.2.1", True, "external", "local") == replies.DELIVERY_NOT_ALLOWED
    assert matrix.decide("198.51.100.1", True, "external", "local") == replies.DELIVERY_NOT_ALLOWED
