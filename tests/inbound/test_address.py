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
