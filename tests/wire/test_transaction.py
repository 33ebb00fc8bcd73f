"""SMTPUTF8, DSN and 8BITMIME toward recording primaries that offer them or not (issue 13):
what goes on MAIL/RCPT, what is refused before MAIL (5.6.7, 5.6.3), what is converted."""

from __future__ import annotations

import dataclasses
import email
import email.policy
import os
from typing import Any

from twisted.internet import defer
from wirecase import SENDER, WireTestCase

from mxbackup.wire import params

UTF8_BODY = "Subject: caf\u00e9\r\n\r\nh\u00e9llo\r\n".encode()
EIGHT_BIT_MIME = (
    b"Subject: x\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9 = ok\r\n"
)


class ModernTests(WireTestCase):
    def modern(self, **kw: Any) -> Any:
        job = self.job(**{k: v for k, v in kw.items() if k in ("recipients", "body", "sender")})
        rest = {k: v for k, v in kw.items() if k not in ("recipients", "body", "sender")}
        return dataclasses.replace(job, **rest)

    def mail(self, primary) -> bytes:
        return next(c for c in primary.commands() if c.startswith(b"MAIL"))

    def rcpts(self, primary) -> list[bytes]:
        return [c for c in primary.commands() if c.startswith(b"RCPT")]

    @defer.inlineCallbacks
    def test_parameters_pass_to_a_target_offering_dsn_and_smtputf8(self) -> Any:
        primary = self.primary()
        primary.extensions += [b"DSN", b"SMTPUTF8"]
        job = self.modern(
            recipients=("j\u00f6rg@example.com", "bob@example.com"),
            body=UTF8_BODY,
            smtputf8=True,
            ret="HDRS",
            envid="env+2B1",
            notify=("SUCCESS,FAILURE", "NEVER"),
            orcpt=("rfc822;J\u00f6rg@example.com", None),
        )
        yield self.deliver(primary, [job])
        self.assertEqual(
            self.mail(primary),
            b"MAIL FROM:<%s> SIZE=%d BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=env+2B1"
            % (SENDER.encode(), job.size),
        )
        self.assertEqual(
            self.rcpts(primary),
            [
                "RCPT TO:<j\u00f6rg@example.com> NOTIFY=SUCCESS,FAILURE "
                "ORCPT=rfc822;J\u00f6rg@example.com".encode(),
                b"RCPT TO:<bob@example.com> NOTIFY=NEVER",
            ],
        )
        self.assertEqual(primary.complete[0].message, UTF8_BODY)
        self.assertTrue(all(o.notify_passed for o in self.out(job).values()))

    @defer.inlineCallbacks
    def test_no_dsn_parameters_to_a_target_without_dsn(self) -> Any:
        primary = self.primary()
        job = self.modern(
            ret="FULL", envid="e1", notify=("SUCCESS",), orcpt=("rfc822;bob@example.com",)
        )
        yield self.deliver(primary, [job])
        self.assertNotIn(b"RET=", self.mail(primary))
        self.assertNotIn(b"ENVID=", self.mail(primary))
        self.assertEqual(self.rcpts(primary), [b"RCPT TO:<bob@example.com>"])
        outcome = self.out(job)["bob@example.com"]
        self.assertEqual((outcome.kind, outcome.notify_passed), ("delivered", False))

    @defer.inlineCallbacks
    def test_utf8_recipient_refused_with_567_ascii_one_sent_plainly(self) -> Any:
        primary = self.primary()  # no SMTPUTF8
        job = self.modern(recipients=("j\u00f6rg@example.com", "bob@example.com"), smtputf8=True)
        yield self.deliver(primary, [job])
        out = self.out(job)
        self.assertEqual(out["j\u00f6rg@example.com"].kind, "permfail")
        self.assertEqual(out["j\u00f6rg@example.com"].status(), "5.6.7")
        self.assertEqual(out["bob@example.com"].kind, "delivered")
        self.assertNotIn(b"SMTPUTF8", self.mail(primary))
        self.assertEqual(self.rcpts(primary), [b"RCPT TO:<bob@example.com>"])

    @defer.inlineCallbacks
    def test_utf8_sender_refused_for_everyone_without_a_mail_command(self) -> Any:
        primary = self.primary()
        job = self.modern(sender="j\u00f6rg@sender.test", smtputf8=True)
        yield self.deliver(primary, [job])
        self.assertEqual(self.out(job)["bob@example.com"].status(), "5.6.7")
        self.assertFalse([c for c in primary.commands() if c.startswith(b"MAIL")])

    @defer.inlineCallbacks
    def test_u_label_domains_go_as_a_labels_to_a_target_without_smtputf8(self) -> Any:
        """Regression (issue 13): an ASCII local part at a U-label domain was refused with
        5.6.7; it is the same mailbox with the domain's A-labels (as Postfix sends it), for
        the sender and the recipients.  Only a UTF-8 local part needs SMTPUTF8."""
        primary = self.primary()  # no SMTPUTF8
        job = self.modern(
            sender="info@b\u00fccher.example",
            recipients=("bob@m\u00fcller.example", "j\u00f6rg@m\u00fcller.example"),
            smtputf8=True,
        )
        yield self.deliver(primary, [job])
        self.assertEqual(
            self.mail(primary),
            b"MAIL FROM:<info@xn--bcher-kva.example> SIZE=%d BODY=8BITMIME" % job.size,
        )
        self.assertEqual(self.rcpts(primary), [b"RCPT TO:<bob@xn--mller-kva.example>"])
        self.assertEqual(
            self.kinds(job),
            {"bob@m\u00fcller.example": "delivered", "j\u00f6rg@m\u00fcller.example": "permfail"},
        )

    @defer.inlineCallbacks
    def test_u_label_domains_stay_as_sent_to_a_target_with_smtputf8(self) -> Any:
        primary = self.primary()
        primary.extensions += [b"SMTPUTF8"]
        job = self.modern(
            sender="info@b\u00fccher.example",
            recipients=("bob@m\u00fcller.example",),
            smtputf8=True,
        )
        yield self.deliver(primary, [job])
        self.assertTrue(
            self.mail(primary).startswith("MAIL FROM:<info@b\u00fccher.example>".encode())
        )
        self.assertEqual(self.rcpts(primary), ["RCPT TO:<bob@m\u00fcller.example>".encode()])

    @defer.inlineCallbacks
    def test_ascii_smtputf8_mail_goes_plainly_with_utf8_headers(self) -> Any:
        primary = self.primary()
        job = self.modern(body=UTF8_BODY, smtputf8=True)
        yield self.deliver(primary, [job])
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertIn(b"BODY=8BITMIME", self.mail(primary))
        self.assertNotIn(b"SMTPUTF8", self.mail(primary))
        self.assertEqual(primary.complete[0].message, UTF8_BODY)

    @defer.inlineCallbacks
    def test_8bit_to_a_target_without_8bitmime_is_converted(self) -> Any:
        primary = self.primary(eight_bit=False)
        job = self.modern(body=EIGHT_BIT_MIME, eight_bit=True)
        yield self.deliver(primary, [job])
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertNotIn(b"BODY=", self.mail(primary))
        got = primary.complete[0].message
        self.assertTrue(got.isascii())
        self.assertIn(b"Content-Transfer-Encoding: quoted-printable\r\n", got)
        msg = email.message_from_bytes(got, policy=email.policy.compat32)
        self.assertEqual(msg.get_payload(decode=True), "caf\u00e9 = ok\r\n".encode())

    @defer.inlineCallbacks
    def test_big_8bit_message_is_converted_while_streamed(self) -> Any:
        body = (
            EIGHT_BIT_MIME
            + b"\xc3\xa9t\xc3\xa9 " * 20
            + b"\r\n"
            + (b"l\xc3\xa0 " * 30 + b"\r\n") * 8000
        )
        primary = self.primary(eight_bit=False)
        job = self.modern(body=body, eight_bit=True)
        yield self.deliver(primary, [job])
        got = primary.complete[0].message
        self.assertTrue(got.isascii())
        self.assertTrue(max(len(line) for line in got.split(b"\r\n")) <= 76)
        msg = email.message_from_bytes(got, policy=email.policy.compat32)
        self.assertEqual(msg.get_payload(decode=True), body.split(b"\r\n\r\n", 1)[1])

    @defer.inlineCallbacks
    def test_8bit_refused_with_563_where_the_route_forbids_conversion(self) -> Any:
        primary = self.primary(eight_bit=False)
        job = self.modern(body=EIGHT_BIT_MIME, eight_bit=True, convert_8bit=False)
        yield self.deliver(primary, [job])
        outcome = self.out(job)["bob@example.com"]
        self.assertEqual((outcome.kind, outcome.status()), ("permfail", "5.6.3"))
        self.assertFalse(primary.transactions)

    @defer.inlineCallbacks
    def test_ascii_mail_declared_8bit_goes_unchanged_even_without_conversion(self) -> Any:
        primary = self.primary(eight_bit=False)
        body = b"Subject: x\r\nContent-Transfer-Encoding: 8bit\r\n\r\nplain\r\n"
        job = self.modern(body=body, eight_bit=True, convert_8bit=False)
        yield self.deliver(primary, [job])
        self.assertEqual(primary.complete[0].message, body)

    @defer.inlineCallbacks
    def test_8bitmime_target_gets_the_body_as_is(self) -> Any:
        primary = self.primary()
        job = self.modern(body=EIGHT_BIT_MIME, eight_bit=True, convert_8bit=False)
        yield self.deliver(primary, [job])
        self.assertIn(b"BODY=8BITMIME", self.mail(primary))
        self.assertEqual(primary.complete[0].message, EIGHT_BIT_MIME)


def test_utf8_orcpt_and_envid_in_ascii_form_for_a_target_without_smtputf8():
    assert (
        params.orcpt_ascii("utf-8;j\u00f6rg@example.com", False) == "utf-8;j\\x{F6}rg@example.com"
    )
    assert params.orcpt_ascii("rfc822;j\u00f6rg@x", False) == "rfc822;j+C3+B6rg@x"
    assert params.orcpt_ascii("utf-8;j\u00f6rg@x", True) == "utf-8;j\u00f6rg@x"


def test_ascii_form_of_addresses():
    assert params.ascii_form("a@example.com") == "a@example.com"
    assert params.ascii_form("info@B\u00fccher.example") == "info@xn--bcher-kva.example"
    assert params.ascii_form("j\u00f6rg@example.com") is None
    assert params.ascii_form("a@\u2620.example") is None  # no IDNA 2008 form: needs SMTPUTF8
    assert params.needs_utf8("a@\u2620.example")
    assert not params.needs_utf8("info@b\u00fccher.example")


class UnreadableMessageTests(WireTestCase):
    """A message file that cannot be read (removed by hand under the server): the
    connection is aborted before a truncated message could be delivered, the job fails
    temporarily, nothing is raised out of the client.  (Regression for the send path made
    of plain functions instead of generators: its errors must still reach the session.)"""

    @defer.inlineCallbacks
    def test_after_the_354_the_connection_is_aborted(self) -> Any:
        primary = self.primary()
        job = self.job()
        os.unlink(job.path)
        attempt = yield self.deliver(primary, [job])
        self.assertEqual(self.kinds(job), {"bob@example.com": "tempfail"})
        self.assertEqual(primary.complete, [])  # no final "." was sent
        self.assertTrue(attempt.connected)

    @defer.inlineCallbacks
    def test_an_8bit_message_to_convert_fails_before_mail(self) -> Any:
        primary = self.primary(eight_bit=False)
        job = dataclasses.replace(self.job(body=EIGHT_BIT_MIME, eight_bit=True), convert_8bit=True)
        os.unlink(job.path)
        yield self.deliver(primary, [job])
        self.assertEqual(self.kinds(job), {"bob@example.com": "tempfail"})
        self.assertFalse(any(c.startswith(b"MAIL") for c in primary.commands()))
