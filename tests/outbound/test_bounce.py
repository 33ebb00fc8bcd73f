"""Building DSNs (RFC 3464): pure, no spool."""

from __future__ import annotations

import email

import pytest

from mxbackup.outbound import bounce
from mxbackup.queue.envelope import Envelope, Recipient
from mxbackup.wire.contract import Outcome

HEADERS = b"Subject: hello\r\nMessage-Id: <m@x>\r\n\r\n"
NOW = 1_800_000_000.0


def envelope(sender="s@sender.test", **params):
    return Envelope(
        id="Q1",
        sender=sender,
        recipients=[Recipient("a@example.com", "example.com", attempts=3)],
        received_at=NOW - 3600,
        size=10,
        params=params,
    )


def parse(data: bytes) -> email.message.Message:
    assert b"\r\n" in data and b"\n" not in data.replace(b"\r\n", b"")  # wire form: CRLF
    return email.message_from_bytes(data)


def test_failed_dsn_structure_and_fields():
    env = envelope(ENVID="env-1")
    env.recipients[0].params["ORCPT"] = "rfc822;A@Example.com"
    outcome = Outcome("permfail", 550, "5.1.1 no such user", "mx.example.com[192.0.2.1]:25")
    dsn = parse(bounce.build_dsn(env, [(env.recipients[0], outcome)], "mx2.test", HEADERS, NOW))
    assert dsn["To"] == "s@sender.test" and dsn["Auto-Submitted"] == "auto-replied"
    assert dsn["From"] == "Mail Delivery System <MAILER-DAEMON@mx2.test>"
    assert dsn["Subject"] == "Undelivered Mail Returned to Sender"
    assert dsn.get_content_type() == "multipart/report"
    assert dsn.get_param("report-type") == "delivery-status"
    human, status, original = dsn.get_payload()
    assert "<a@example.com>: 550 5.1.1 no such user (after 3 attempt(s))" in human.get_payload()
    per_message, block = status.get_payload()
    assert per_message["Reporting-MTA"] == "dns; mx2.test"
    assert per_message["Original-Envelope-Id"] == "env-1" and per_message["X-Queue-ID"] == "Q1"
    assert block["Original-Recipient"] == "rfc822;A@Example.com"
    assert block["Final-Recipient"] == "rfc822; a@example.com"
    assert (block["Action"], block["Status"]) == ("failed", "5.1.1")
    assert block["Remote-MTA"] == "dns; mx.example.com"
    assert block["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert original.get_content_type() == "text/rfc822-headers"
    assert "Subject: hello" in original.get_payload()


@pytest.mark.parametrize(
    ("outcome", "action", "status"),
    [
        (Outcome("tempfail", 451, "4.3.0 busy"), "failed", "5.4.7"),  # out of retries
        (Outcome("tempfail", 0, "connect: refused"), "failed", "5.4.7"),
        (Outcome("permfail", 0, "5.1.2 null MX"), "failed", "5.1.2"),
        (Outcome("permfail", 554, "no enhanced code"), "failed", "5.0.0"),
        (Outcome("tempfail", 451, "4.3.0 busy"), "delayed", "4.3.0"),
        (Outcome("tempfail", 0, "down"), "delayed", "4.0.0"),
        (Outcome("permfail", 550, "5.1.1 odd"), "delayed", "4.4.7"),
    ],
)
def test_status_per_action(outcome, action, status):
    env = envelope()
    data = bounce.build_dsn(env, [(env.recipients[0], outcome)], "mx2.test", HEADERS, NOW, action)
    block = parse(data).get_payload()[1].get_payload()[1]
    assert (block["Action"], block["Status"]) == (action, status)


def test_local_failure_has_no_remote_and_an_own_diagnostic_type():
    env = envelope()
    outcome = Outcome("tempfail", 0, "4.4.1 target is down: connect: refused")
    data = bounce.build_dsn(env, [(env.recipients[0], outcome)], "mx2.test", HEADERS, NOW)
    block = parse(data).get_payload()[1].get_payload()[1]
    assert block["Remote-MTA"] is None
    assert block["Diagnostic-Code"] == "X-mxbackup; 4.4.1 target is down: connect: refused"


def test_delayed_notice_says_it_is_still_being_retried():
    env = envelope()
    outcome = Outcome("tempfail", 451, "4.3.0 busy", "[192.0.2.1]:25")
    data = bounce.build_dsn(
        env, [(env.recipients[0], outcome)], "mx2.test", HEADERS, NOW, "delayed"
    )
    dsn = parse(data)
    assert dsn["Subject"] == "Delayed Mail (still being retried)"
    assert "you need not resend it" in dsn.get_payload()[0].get_payload()
    assert dsn.get_payload()[1].get_payload()[1]["Remote-MTA"] == "dns; 192.0.2.1"


@pytest.mark.parametrize(
    ("sender", "headers", "expected"),
    [
        ("s@sender.test", b"Subject: x\r\n\r\n", True),
        ("s@sender.test", b"Auto-Submitted: no\r\n\r\n", True),
        ("", b"Subject: x\r\n\r\n", False),  # never to <>
        ("s@sender.test", b"Auto-Submitted: auto-replied\r\n\r\n", False),
        ("s@sender.test", b"auto-submitted: Auto-Generated\r\n\r\n", False),
    ],
)
def test_should_notify(sender, headers, expected):
    assert bounce.should_notify(envelope(sender), headers) is expected


def test_header_block():
    assert bounce.header_block(b"A: 1\r\nB: 2\r\n\r\nbody\r\n\r\nmore") == b"A: 1\r\nB: 2\r\n"
    assert bounce.header_block(b"A: 1\r\n") == b"A: 1\r\n"  # no body: all of it
