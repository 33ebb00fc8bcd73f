"""Authentication-Results: our header, and the filter removing fields in our name (any
split of the stream, folded fields, comments before the authserv-id; the body untouched)."""

from __future__ import annotations

from mxbackup.checks.authres import ForgedResultsFilter, authserv_id, header

MESSAGE = (
    b"Received: from x\r\n"
    b"Authentication-Results: mx2.example.net; spf=pass smtp.mailfrom=evil.test\r\n"
    b"Authentication-Results: primary.example.com;\r\n\tdkim=pass header.d=a.test\r\n"
    b"authentication-results:\r\n  (forged) MX2.Example.Net;\r\n  dkim=pass\r\n"
    b"Subject: hi\r\n"
    b"\r\n"
    b"Authentication-Results: mx2.example.net; in the body stays\r\n"
)
EXPECTED = (
    b"Received: from x\r\n"
    b"Authentication-Results: primary.example.com;\r\n\tdkim=pass header.d=a.test\r\n"
    b"Subject: hi\r\n"
    b"\r\n"
    b"Authentication-Results: mx2.example.net; in the body stays\r\n"
)


def filtered(chunks: list[bytes]) -> tuple[bytes, int]:
    out: list[bytes] = []
    f = ForgedResultsFilter("mx2.example.net", out.append)
    for chunk in chunks:
        f.write(chunk)
    f.close()
    return b"".join(out), f.removed


def test_fields_in_our_name_are_removed_whatever_the_split() -> None:
    lines = MESSAGE.split(b"\r\n")[:-1]
    assert filtered([MESSAGE]) == (EXPECTED, 2)
    assert filtered([line + b"\r\n" for line in lines]) == (EXPECTED, 2)
    for cut in range(1, len(lines)):
        first = b"".join(line + b"\r\n" for line in lines[:cut])
        rest = b"".join(line + b"\r\n" for line in lines[cut:])
        assert filtered([first, rest]) == (EXPECTED, 2), cut


def test_a_field_at_the_very_end_of_a_header_only_message() -> None:
    assert filtered([b"Subject: x\r\nAuthentication-Results: mx2.example.net; x\r\n"]) == (
        b"Subject: x\r\n",
        1,
    )


def test_header_and_authserv_id() -> None:
    made = header("mx2.example.net", ["spf=pass smtp.mailfrom=a.test", "dkim=none"])
    assert made == (
        b"Authentication-Results: mx2.example.net;\r\n\tspf=pass smtp.mailfrom=a.test;\r\n"
        b"\tdkim=none\r\n"
    )
    assert authserv_id(made) == "mx2.example.net"
    assert authserv_id(b"Authentication-Results: (c) a.test (d); none") == "a.test"
