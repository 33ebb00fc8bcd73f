"""Path parsing (pitfall 8): strict syntax, and every routing trick named, never stripped."""

from __future__ import annotations

import pytest

from mxbackup.inbound.address import (
    Mailbox,
    PathError,
    parse_params,
    parse_path,
    split_command_argument,
)


def test_plain_mailbox_keeps_local_case_and_lowers_the_domain():
    assert parse_path("<Alice@Example.COM>", allow_null=False) == Mailbox("Alice", "example.com")
    assert str(Mailbox("Alice", "example.com")) == "Alice@example.com"


def test_null_path_only_where_allowed():
    assert parse_path("<>", allow_null=True) is None
    with pytest.raises(PathError):
        parse_path("<>", allow_null=False)


@pytest.mark.parametrize(
    ("path", "routing"),
    [
        ("<u%x@example.com>", "percent hack"),
        ("<a!b@example.com>", "bang path"),
        ("<@a.test,@b.test:u@example.com>", "source route"),
        ("<u@[127.0.0.1]>", "address literal"),
        ("<u@[IPv6:::1]>", "address literal"),
        ('<"u@evil.test"@example.com>', "quoted @"),
        ('<"u%evil.test"@example.com>', "percent hack"),
        ('<"a!b"@example.com>', "bang path"),
        ('<"a\\ b"@example.com>', "backslash escape in quoted local part"),
    ],
)
def test_routing_tricks_are_named(path, routing):
    mailbox = parse_path(path, allow_null=False)
    assert mailbox is not None and mailbox.routing == routing


def test_source_route_is_kept_as_routing_not_stripped():
    mailbox = parse_path("<@relay.test:u@example.com>", allow_null=False)
    assert mailbox == Mailbox("u", "example.com", "source route")


def test_needlessly_quoted_local_part_is_the_same_mailbox():
    assert parse_path('<"alice"@example.com>', allow_null=False) == Mailbox("alice", "example.com")
    quoted = parse_path('<"a b"@example.com>', allow_null=False)
    assert quoted == Mailbox('"a b"', "example.com") and quoted.routing is None


@pytest.mark.parametrize(
    "path",
    [
        "u@example.com",
        "<u@example.com",
        "<example.com>",
        "<@example.com>",
        "<u@evil.test@example.com>",
        "<u@example.com.>",
        "<u@-bad-.example>",
        "<u@>",
        "<a..b@example.com>",
        '<"unterminated@example.com>',
        '<"a"b@example.com>',
        "<@a.test>",
        "<u@[]>",
        "<u@[a\\b]>",
        "<" + "x" * 65 + "@example.com>",
    ],
)
def test_malformed_paths_are_syntax_errors(path):
    with pytest.raises(PathError) as e:
        parse_path(path, allow_null=True)
    assert e.value.kind == "syntax"


def test_local_part_of_64_octets_is_allowed():
    assert parse_path("<" + "x" * 64 + "@example.com>", allow_null=False) is not None


def test_non_ascii_is_its_own_kind():
    with pytest.raises(PathError) as e:
        parse_path("<j\u00fcrgen@example.com>", allow_null=False)
    assert e.value.kind == "utf8"


def test_split_command_argument():
    assert split_command_argument("FROM:<a@b.test> SIZE=10", "FROM:") == ("<a@b.test>", " SIZE=10")
    assert split_command_argument("to: <a@b.test>", "TO:") == ("<a@b.test>", "")
    assert split_command_argument('TO:<"x>y"@b.test>', "TO:") == ('<"x>y"@b.test>', "")
    # without brackets (not RFC 5321; accepted like Postfix)
    assert split_command_argument("FROM:a@b.test BODY=7BIT", "FROM:") == ("<a@b.test>", "BODY=7BIT")
    for bad in ("TO:<a@b.test>", "FROM:<a@b.test"):
        with pytest.raises(PathError):
            split_command_argument(bad, "FROM:")


def test_parse_params():
    assert parse_params(" size=10  BODY=8BITMIME AUTH=<>") == {
        "SIZE": "10",
        "BODY": "8BITMIME",
        "AUTH": "<>",
    }
    assert parse_params("FLAG") == {"FLAG": None}
    assert parse_params("") == {}
    for bad in ("=x", "-A=1", "A=b=c", "A=\x01"):
        with pytest.raises(PathError):
            parse_params(bad)


# -- SMTPUTF8 (RFC 6531 3.3) -------------------------------------------------------------------
def test_utf8_address_only_with_smtputf8():
    with pytest.raises(PathError) as e:
        parse_path("<jürgen@bücher.example>", allow_null=False)
    assert e.value.kind == "utf8"
    mailbox = parse_path("<Jürgen@Bücher.example>", allow_null=False, utf8=True)
    assert mailbox == Mailbox("Jürgen", "bücher.example", None, "xn--bcher-kva.example")
    assert str(mailbox) == "Jürgen@bücher.example"  # kept as sent (domain in lower case)
    assert mailbox.lookup_address == "Jürgen@xn--bcher-kva.example"


def test_a_label_and_ascii_addresses_are_unchanged_with_smtputf8():
    mailbox = parse_path("<u@XN--BCHER-KVA.example>", allow_null=False, utf8=True)
    assert mailbox == Mailbox("u", "xn--bcher-kva.example")
    assert mailbox.lookup_domain == "xn--bcher-kva.example"


def test_u_labels_are_idna_2008():
    # IDNA 2003 (Python's codec) would make this "strasse.example": another domain.
    mailbox = parse_path("<u@straße.example>", allow_null=False, utf8=True)
    assert mailbox is not None and mailbox.lookup_domain == "xn--strae-oqa.example"


@pytest.mark.parametrize(
    "path",
    [
        "<u@b\u00fccher\uff0eexample>",  # fullwidth full stop: not a label separator
        "<u@bu\u0308cher.example>",  # not NFC
        "<u@\u2603.example>",  # a symbol: IDNA 2003 only
        "<u@a\u200db.example>",  # a joiner out of context
        "<u@b\u00fccher.example.>",
        "<\u00fc\u202eu@example.com>",  # a bidi override in the local part
        "<\u00fc\u200bu@example.com>",  # zero-width space
        "<\u00fc\u3000u@example.com>",  # an ideographic space
        "<\u00fc\x85u@example.com>",  # a C1 control
        "<\u00fc\udcffu@example.com>",  # an octet that was not UTF-8 (surrogateescape)
        "<u@b\udcfcher.example>",
        "<" + "\u00fc" * 33 + "@example.com>",  # 66 octets: over 64
        "<u@exa\uff20mple.com>",  # a fullwidth @ in the domain
        "<\uff20evil.test:u@example.com>",  # a look-alike source route: ":" is no atext
    ],
)
def test_malformed_utf8_addresses_are_syntax_errors(path):
    with pytest.raises(PathError) as e:
        parse_path(path, allow_null=False, utf8=True)
    assert e.value.kind == "syntax"


@pytest.mark.parametrize(
    ("path", "routing"),
    [
        ("<u\uff05evil.test@example.com>", "look-alike %"),  # FULLWIDTH PERCENT SIGN
        ("<u\ufe6aevil.test@example.com>", "look-alike %"),  # SMALL PERCENT SIGN
        ("<evil.test\uff01u@example.com>", "look-alike !"),  # FULLWIDTH EXCLAMATION MARK
        ("<u\uff20evil.test@example.com>", "look-alike @"),  # FULLWIDTH COMMERCIAL AT
        ("<u\ufe6bevil.test@example.com>", "look-alike @"),  # SMALL COMMERCIAL AT
        ('<"\u00fc@evil.test"@example.com>', "quoted @"),
        ('<"\u00fc\uff20evil.test"@example.com>', "look-alike @"),
        ("<\u00fc%evil.test@example.com>", "percent hack"),
        ("<\u00fc!evil.test@example.com>", "bang path"),
        ("<@r\u00fcelay.test:\u00fc@example.com>", "source route"),
        ("<\u00fc@[127.0.0.1]>", "address literal"),
    ],
)
def test_routing_tricks_are_named_in_utf8_addresses(path, routing):
    mailbox = parse_path(path, allow_null=False, utf8=True)
    assert mailbox is not None and mailbox.routing == routing


def test_utf8_parameter_values_only_with_smtputf8():
    assert parse_params("ORCPT=utf-8;\u00fc@x", utf8=True) == {"ORCPT": "utf-8;\u00fc@x"}
    with pytest.raises(PathError):
        parse_params("ORCPT=utf-8;\u00fc@x")
    with pytest.raises(PathError):
        parse_params("ORCPT=utf-8;\udcfc@x", utf8=True)


def test_a_repeated_parameter_is_named():
    with pytest.raises(PathError) as e:
        parse_params("RET=FULL ret=HDRS")
    assert e.value.kind == "repeat" and str(e.value) == "RET"
