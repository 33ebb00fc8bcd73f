"""Our Received header: CRLF only (pitfall 6), safe HELO, protocol names per RFC 3848."""

from __future__ import annotations

from mxbackup.inbound.received import received_header


def header(**kw) -> bytes:
    args = {
        "helo": "c.test",
        "client_ip": "192.0.2.1",
        "hostname": "mx2.example.net",
        "queue_id": "ABC123",
        "tls": None,
        "authenticated": False,
        "recipients": ["u@example.com"],
        "now": 0.0,
    }
    return received_header(**{**args, **kw})


def test_one_recipient_is_named():
    assert header() == (
        b"Received: from c.test ([192.0.2.1])\r\n"
        b"\tby mx2.example.net (mxbackup) with ESMTP id ABC123\r\n"
        b"\tfor <u@example.com>; Thu, 01 Jan 1970 00:00:00 +0000\r\n"
    )


def test_several_recipients_are_not_named():
    assert b"for <" not in header(recipients=["a@example.com", "b@example.com"])


def test_protocol_names():
    assert b"with SMTP id" in header(helo=None)
    assert b"from unknown ([192.0.2.1])" in header(helo=None)
    assert b"with ESMTPS (TLSv1.3 X) id" in header(tls=" (TLSv1.3 X)")
    assert b"with ESMTPS id" in header(tls="")
    assert b"with ESMTPSA id" in header(tls="", authenticated=True)
    assert b"with ESMTPA id" in header(authenticated=True)


def test_helo_is_made_safe_and_no_bare_line_ends():
    data = header(helo="evil\r\nX-Injected: 1 (x)\\")
    assert data.count(b"\n") == data.count(b"\r\n") == 3
    assert b"from evil??X-Injected:?1??x??" in data


def test_smtputf8_protocol_names_and_utf8_recipient():
    """RFC 6531 4.4: UTF8SMTP, UTF8SMTPS, UTF8SMTPA, UTF8SMTPSA; the header is UTF-8."""
    h = header(utf8=True, recipients=["jürgen@bücher.example"])
    assert b"with UTF8SMTP id" in h and "for <jürgen@bücher.example>".encode() in h
    assert b"with UTF8SMTPS" in header(utf8=True, tls="")
    assert b"with UTF8SMTPA id" in header(utf8=True, authenticated=True)
    assert b"with UTF8SMTPSA" in header(utf8=True, tls="", authenticated=True)
    assert b"for <j?rgen@b?cher.example>" in header(recipients=["jürgen@bücher.example"])
