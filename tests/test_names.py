"""Domain names (mxbackup.names): the one parser of the configuration, SMTP paths and ETRN."""

from __future__ import annotations

import pytest

from mxbackup.names import DomainError, lookup_form, parse_domain


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Example.COM", "example.com"),
        ("example.com.", "example.com"),  # the root's dot
        ("a-b.c0.example", "a-b.c0.example"),
        ("x" * 63 + ".example", "x" * 63 + ".example"),
        ("host.123", "host.123"),  # all-digit last label: allowed unless asked otherwise
    ],
)
def test_valid_names_are_normalised(text, expected):
    assert parse_domain(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("a..b", "empty label"),
        (".example", "empty label"),
        ("-a.example", "must be letters, digits and hyphens"),
        ("a-.example", "must be letters, digits and hyphens"),
        ("a_b.example", "must be letters, digits and hyphens"),
        ("x" * 64 + ".example", "longer than 63 characters"),
        (".".join(["abcdefghi"] * 26), "longer than 253 characters"),
        ("*.example.org", "wildcards are not allowed here"),
        ("bücher.example", "not ASCII"),
    ],
)
def test_invalid_names_say_why(text, reason):
    with pytest.raises(DomainError, match=reason):
        parse_domain(text)


def test_wildcards_only_as_the_whole_first_label():
    assert parse_domain("*.Example.org", wildcard=True) == "*.example.org"
    with pytest.raises(DomainError, match="only allowed as the whole first label"):
        parse_domain("a.*.example.org", wildcard=True)
    with pytest.raises(DomainError, match="needs a domain after"):
        parse_domain("*", wildcard=True)


def test_trailing_dot_refused_where_paths_forbid_it():
    with pytest.raises(DomainError, match="empty label"):
        parse_domain("example.com.", trailing_dot=False)


def test_idna_turns_u_labels_into_a_labels():
    assert parse_domain("Bücher.example", idna=True) == "xn--bcher-kva.example"
    with pytest.raises(DomainError, match="not a valid internationalised domain name"):
        parse_domain("\xad.example", idna=True)  # a soft hyphen alone: an empty label


def test_an_ip_address_is_not_a_name_where_that_matters():
    with pytest.raises(DomainError, match="last label is all digits"):
        parse_domain("192.0.2.1", numeric_tld=False)


def test_idna_is_2008_not_2003():
    # IDNA 2003 (Python's codec) maps ß to "ss" and accepts symbols; IDNA 2008 does neither.
    assert parse_domain("Straße.example", idna=True) == "xn--strae-oqa.example"
    with pytest.raises(DomainError, match="not a valid internationalised domain name"):
        parse_domain("\u2603.example", idna=True)
    assert lookup_form("BÜCHER.Example") == "xn--bcher-kva.example"
    assert lookup_form("Example.COM") == "example.com"
    assert lookup_form("bu\u0308cher.example") is None


def test_client_address_drops_the_zone_and_unmaps_ipv4():
    import ipaddress

    from mxbackup.names import client_address

    assert client_address("::ffff:192.0.2.1") == ipaddress.ip_address("192.0.2.1")
    assert client_address("fe80::1%eth0") == ipaddress.ip_address("fe80::1")
    assert client_address("2001:db8::1") == ipaddress.ip_address("2001:db8::1")
    assert client_address("not an address") is None
