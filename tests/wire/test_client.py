"""Outbound delivery (mxbackup.wire.client) against a scripted primary on real 127.0.0.1 sockets.

Each test pins one behaviour of the issue's acceptance criteria or one override of Twisted's
``ESMTPSender`` (pitfalls 11-13 of ``shared/reference/twisted-mail-pitfalls.md``).
"""

from __future__ import annotations

import base64
import shutil
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from fakeprimary import FakePrimary, TestCA, unstuff
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, reactor
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase, TestCase

from mxbackup.wire.client import Attempt, DotStuffer, Gate, Job, SenderFactory, deliver
from mxbackup.wire.contract import Candidate, Outcome, Settings

CHUNK = 2**14  # twisted.protocols.basic.FileSender.CHUNK_SIZE
NAME = "mx.primary.test"
SENDER = "alice@example.net"
USER, PASSWORD = b"backup", b"s3cret pass"

MESSAGE = (
    b"From: Alice <alice@example.net>\r\n"
    b"To: Bob <bob@example.com>\r\n"
    b"Subject: hello\r\n"
    b"\r\n"
    b"Hello Bob,\r\n"
    b".a line starting with a dot\r\n"
    b"\r\n"
)


def reference_stuffing(message: bytes) -> bytes:
    """RFC 5321 4.5.2 over the whole message at once."""
    return (b"\r\n" + message).replace(b"\r\n.", b"\r\n..")[2:]


def stuff_in_chunks(message: bytes, cuts: list[int]) -> bytes:
    stuffer = DotStuffer()
    bounds = [0, *sorted(cuts), len(message)]
    return b"".join(stuffer(message[a:b]) for a, b in zip(bounds, bounds[1:], strict=False))


def closed_port() -> int:
    """A port nothing listens on: bound, read, closed."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def body_with_dots_at_chunk_boundaries() -> bytes:
    """A CRLF message whose lines at 16 KiB, 32 KiB and 48 KiB start with a dot: a lone "."
    (which would end DATA), a smuggled second transaction, and a ".." line."""
    head = b"From: alice@example.net\r\nTo: bob@example.com\r\nSubject: dots\r\n\r\n"
    out = bytearray(head)
    out += b"a lone dot in the middle of a chunk:\r\n.\r\n"

    def fill_to(boundary: int) -> None:
        # lines of "x" then a CRLF ending exactly at ``boundary``
        while boundary - len(out) > 80:
            out.extend(b"x" * 76 + b"\r\n")
        out.extend(b"y" * (boundary - len(out) - 2) + b"\r\n")
        assert len(out) == boundary

    fill_to(CHUNK)
    out += b".\r\nMAIL FROM:<mallory@evil.test>\r\nRCPT TO:<victim@example.com>\r\nDATA\r\n"
    out += b"Smuggled!\r\n"
    fill_to(2 * CHUNK)
    out += b"..two dots\r\n"
    fill_to(3 * CHUNK)
    out += b".\r\n"
    out += b"the end\r\n"
    return bytes(out)


# -- DotStuffer ------------------------------------------------------------------------------


class DotStufferTests(SynchronousTestCase):
    def test_dot_line_exactly_at_chunk_boundary_is_stuffed(self) -> None:
        first = b"x" * (CHUNK - 2) + b"\r\n"
        assert len(first) == CHUNK
        stuffer = DotStuffer()
        self.assertEqual(stuffer(first), first)
        self.assertEqual(stuffer(b".\r\nnext\r\n"), b"..\r\nnext\r\n")
        # CR and LF of the line end split over two chunks
        stuffer = DotStuffer()
        self.assertEqual(stuffer(b"x" * (CHUNK - 1) + b"\r"), b"x" * (CHUNK - 1) + b"\r")
        self.assertEqual(stuffer(b"\n.hidden\r\n"), b"\n..hidden\r\n")
        self.assertTrue(stuffer.ends_with_crlf())

    def test_first_line_of_the_message_is_stuffed(self) -> None:
        self.assertEqual(DotStuffer()(b".\r\n"), b"..\r\n")

    def test_crlf_is_left_alone(self) -> None:
        stuffer = DotStuffer()
        self.assertEqual(stuffer(b"a\r\nb\r\n"), b"a\r\nb\r\n")
        self.assertTrue(stuffer.ends_with_crlf())

    def test_ends_with_crlf_tracks_the_last_octets(self) -> None:
        stuffer = DotStuffer()
        stuffer(b"abc\r")
        self.assertFalse(stuffer.ends_with_crlf())
        stuffer(b"\n")
        self.assertTrue(stuffer.ends_with_crlf())
        stuffer(b"x")
        self.assertFalse(stuffer.ends_with_crlf())

    @settings(max_examples=300, deadline=None)
    @given(
        lines=st.lists(
            st.tuples(
                st.integers(min_value=0, max_value=3),
                st.binary(max_size=12).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
            ),
            max_size=30,
        ),
        data=st.data(),
    )
    def test_chunked_stuffing_equals_whole_message_stuffing(self, lines: Any, data: Any) -> None:
        message = b"".join(b"." * dots + text + b"\r\n" for dots, text in lines)
        cuts = data.draw(
            st.lists(st.integers(min_value=0, max_value=len(message)), max_size=12),
            label="cuts",
        )
        out = stuff_in_chunks(message, cuts)
        self.assertEqual(out, reference_stuffing(message))
        self.assertNotIn(b"\r\r\n", out)
        self.assertEqual(out.count(b"\r\n"), message.count(b"\r\n"))
        self.assertEqual(unstuff(out), message)
        self.assertNotIn(b"\r\n.\r\n", b"\r\n" + out)  # nothing in it can end DATA


# -- against the fake primary ------------------------------------------------------------------


class WireTestCase(TestCase):
    """Helpers: a fake primary that is stopped in cleanup, jobs from files, settings."""

    timeout = 20  # seconds; a hung session fails the test instead of stalling the run

    def setUp(self) -> None:
        # not trial's mktemp: under pytest it writes into the working directory
        self.tmp = Path(tempfile.mkdtemp(prefix="mx-out-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self._qids = 0

    def primary(self, implicit_tls: Any = None, **kw: Any) -> FakePrimary:
        p = FakePrimary(**kw).listen(reactor, implicit_tls)
        self.addCleanup(p.stop)
        return p

    def job(
        self,
        recipients: tuple[str, ...] = ("bob@example.com",),
        body: bytes = MESSAGE,
        sender: str = SENDER,
        eight_bit: bool = False,
    ) -> Job:
        self._qids += 1
        qid = f"Q{self._qids:04d}"
        path = self.tmp / qid
        path.write_bytes(body)
        return Job(qid, sender, list(recipients), str(path), len(body), eight_bit)

    def settings(self, **kw: Any) -> Settings:
        kw.setdefault("reply_timeout", 10.0)
        kw.setdefault("connect_timeout", 5.0)
        return Settings("mx2.example.net", **kw)

    def candidate(self, primary: FakePrimary | int, name: str = NAME) -> Candidate:
        port = primary if isinstance(primary, int) else primary.portnum
        return Candidate(name, "127.0.0.1", port)

    def deliver(
        self,
        targets: list[FakePrimary | int] | FakePrimary,
        jobs: list[Job],
        settings: Settings | None = None,
        name: str = NAME,
    ) -> defer.Deferred:
        if not isinstance(targets, list):
            targets = [targets]
        candidates = [self.candidate(t, name) for t in targets]
        return deliver(reactor, candidates, settings or self.settings(), jobs)

    def kinds(self, job: Job) -> dict[str, str]:
        return {rcpt: outcome.kind for rcpt, outcome in job.outcomes.items()}


class DataTests(WireTestCase):
    @defer.inlineCallbacks
    def test_dots_at_chunk_boundaries_arrive_as_one_message(self) -> Any:
        body = body_with_dots_at_chunk_boundaries()
        primary = self.primary()
        job = self.job(body=body)
        attempt = yield self.deliver(primary, [job])
        self.assertTrue(attempt.connected)
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertEqual(len(primary.transactions), 1)
        txn = primary.transactions[0]
        self.assertTrue(txn.complete)
        self.assertEqual(txn.message, body)  # byte for byte after unstuffing
        self.assertEqual(txn.raw, reference_stuffing(body))
        self.assertNotIn(b"\r\r\n", txn.raw)
        # the smuggled commands were never seen as commands
        self.assertFalse(any(c.startswith(b"MAIL FROM:<mallory") for c in primary.commands()))

    @defer.inlineCallbacks
    def test_message_is_sent_unaltered(self) -> Any:
        body = MESSAGE + b"8bit: \xc3\xa9t\xc3\xa9\r\n" + b"z" * 3000 + b"\r\n"
        primary = self.primary()
        job = self.job(body=body, eight_bit=True)
        yield self.deliver(primary, [job])
        self.assertEqual([t.message for t in primary.complete], [body])

    @defer.inlineCallbacks
    def test_message_without_final_crlf_is_terminated(self) -> Any:
        primary = self.primary()
        job = self.job(body=b"Subject: x\r\n\r\nno newline at the end")
        yield self.deliver(primary, [job])
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertEqual(
            primary.complete[0].message, b"Subject: x\r\n\r\nno newline at the end\r\n"
        )

    @defer.inlineCallbacks
    def test_message_file_is_closed_after_sending(self) -> Any:
        opened: list[Any] = []
        import mxbackup.wire.client as smtp_out

        real_open = open

        def tracking_open(*args: Any, **kw: Any) -> Any:
            f = real_open(*args, **kw)
            opened.append(f)
            return f

        smtp_out.open = tracking_open  # type: ignore[attr-defined]
        self.addCleanup(delattr, smtp_out, "open")
        primary = self.primary(rcpt_replies={"carol@example.com": (550, "5.1.1 no")})
        jobs = [self.job(), self.job(), self.job(("carol@example.com",))]
        yield self.deliver(primary, jobs)
        self.assertEqual(len(opened), 2)  # the all-refused job's file is never opened
        self.assertTrue(all(f.closed for f in opened))

    @defer.inlineCallbacks
    def test_connection_lost_during_data_is_tempfail(self) -> Any:
        primary = self.primary(drop_after_data_bytes=5000)
        job = self.job(("bob@example.com", "carol@example.com"), body=MESSAGE * 500)
        attempt = yield self.deliver(primary, [job])
        self.assertTrue(attempt.connected)
        self.assertEqual(set(self.kinds(job).values()), {"tempfail"})
        self.assertTrue(job.outcomes["bob@example.com"].text.startswith("data: "))
        self.assertNotIn("producing", job.outcomes["bob@example.com"].text)
        self.assertEqual(primary.complete, [])


class OutcomeTests(WireTestCase):
    @defer.inlineCallbacks
    def test_one_recipient_refused_one_accepted(self) -> Any:
        primary = self.primary(
            rcpt_replies={"nobody@example.com": (550, "5.1.1 <nobody@example.com>: no such user")}
        )
        job = self.job(("bob@example.com", "nobody@example.com"))
        attempt = yield self.deliver(primary, [job])
        self.assertTrue(attempt.connected)
        self.assertEqual(attempt.remote, f"{NAME}[127.0.0.1]:{primary.portnum}")
        ok, bad = job.outcomes["bob@example.com"], job.outcomes["nobody@example.com"]
        self.assertEqual((ok.kind, ok.code), ("delivered", 250))
        self.assertEqual((bad.kind, bad.code), ("permfail", 550))
        self.assertEqual(bad.text, "5.1.1 <nobody@example.com>: no such user")
        self.assertEqual(bad.status(), "5.1.1")
        self.assertEqual(bad.remote, attempt.remote)
        self.assertEqual(primary.complete[0].rcpts, [b"bob@example.com"])

    @defer.inlineCallbacks
    def test_rcpt_451_is_tempfail(self) -> Any:
        primary = self.primary(rcpt_replies={"later@example.com": (451, "4.3.0 try later")})
        job = self.job(("bob@example.com", "later@example.com"))
        yield self.deliver(primary, [job])
        self.assertEqual(
            self.kinds(job), {"bob@example.com": "delivered", "later@example.com": "tempfail"}
        )
        self.assertEqual(job.outcomes["later@example.com"].reply, "451 4.3.0 try later")

    @defer.inlineCallbacks
    def test_all_recipients_refused_keeps_each_reply(self) -> Any:
        primary = self.primary(
            rcpt_replies={
                "a@example.com": (550, "5.1.1 unknown a"),
                "b@example.com": (452, "4.2.2 mailbox full"),
            }
        )
        job = self.job(("a@example.com", "b@example.com"))
        yield self.deliver(primary, [job])
        self.assertEqual(job.outcomes["a@example.com"].reply, "550 5.1.1 unknown a")
        self.assertEqual(job.outcomes["b@example.com"].reply, "452 4.2.2 mailbox full")
        self.assertEqual(primary.transactions, [])

    @defer.inlineCallbacks
    def test_mail_from_550_fails_every_recipient(self) -> Any:
        primary = self.primary(mail_reply=(550, "5.7.1 sender rejected"))
        job = self.job(("bob@example.com", "carol@example.com"))
        attempt = yield self.deliver(primary, [job])
        self.assertTrue(attempt.connected)
        self.assertEqual(set(self.kinds(job).values()), {"permfail"})
        self.assertEqual(job.outcomes["carol@example.com"].reply, "550 5.7.1 sender rejected")

    @defer.inlineCallbacks
    def test_mail_from_451_defers_every_recipient(self) -> Any:
        primary = self.primary(mail_reply=(451, "4.7.1 greylisted"))
        job = self.job(("bob@example.com", "carol@example.com"))
        yield self.deliver(primary, [job])
        self.assertEqual(set(self.kinds(job).values()), {"tempfail"})
        self.assertEqual(job.outcomes["bob@example.com"].reply, "451 4.7.1 greylisted")

    @defer.inlineCallbacks
    def test_mail_refused_for_the_second_job_only(self) -> Any:
        primary = self.primary()
        first, second = self.job(), self.job(("carol@example.com", "dave@example.com"))
        # the second transaction's MAIL is refused: every recipient of that job, and only them
        primary.mail_reply = None
        replies = iter([None, (550, "5.7.1 not this one")])

        original = type(primary).buildProtocol

        def build(factory: Any, addr: Any) -> Any:
            proto = original(factory, addr)
            smtp_mail = proto.smtp_MAIL

            def mail(arg: bytes) -> None:
                factory.mail_reply = next(replies)
                smtp_mail(arg)

            proto.smtp_MAIL = mail
            return proto

        self.patch(type(primary), "buildProtocol", build)
        yield self.deliver(primary, [first, second])
        self.assertEqual(self.kinds(first), {"bob@example.com": "delivered"})
        self.assertEqual(
            self.kinds(second), {"carol@example.com": "permfail", "dave@example.com": "permfail"}
        )
        self.assertEqual(second.outcomes["dave@example.com"].code, 550)

    @defer.inlineCallbacks
    def test_data_554_fails_accepted_recipients(self) -> Any:
        primary = self.primary(
            data_reply=(554, "5.6.0 content rejected"),
            rcpt_replies={"later@example.com": (450, "4.2.1 busy")},
        )
        job = self.job(("bob@example.com", "carol@example.com", "later@example.com"))
        yield self.deliver(primary, [job])
        self.assertEqual(
            self.kinds(job),
            {
                "bob@example.com": "permfail",
                "carol@example.com": "permfail",
                "later@example.com": "tempfail",
            },
        )
        self.assertEqual(job.outcomes["bob@example.com"].reply, "554 5.6.0 content rejected")
        self.assertEqual(job.outcomes["later@example.com"].reply, "450 4.2.1 busy")

    @defer.inlineCallbacks
    def test_data_451_defers(self) -> Any:
        primary = self.primary(data_reply=(451, "4.3.0 local error"))
        job = self.job(("bob@example.com", "carol@example.com"))
        yield self.deliver(primary, [job])
        self.assertEqual(set(self.kinds(job).values()), {"tempfail"})
        self.assertEqual(job.outcomes["bob@example.com"].code, 451)

    @defer.inlineCallbacks
    def test_null_sender(self) -> Any:
        primary = self.primary(size=None, eight_bit=False)
        job = self.job(sender="")
        yield self.deliver(primary, [job])
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertEqual(primary.complete[0].mail, b"MAIL FROM:<>")

    @defer.inlineCallbacks
    def test_several_jobs_over_one_connection(self) -> Any:
        primary = self.primary()
        bodies = [MESSAGE + b"number %d\r\n" % i for i in range(3)]
        jobs = [
            self.job(("bob@example.com",), body=bodies[0]),
            self.job(("carol@example.com", "dave@example.com"), body=bodies[1], sender=""),
            self.job(("erin@example.com",), body=bodies[2]),
        ]
        attempt = yield self.deliver(primary, jobs)
        self.assertTrue(attempt.connected)
        self.assertEqual(primary.connections, 1)
        self.assertEqual([t.message for t in primary.complete], bodies)
        self.assertEqual(
            [t.rcpts for t in primary.complete],
            [
                [b"bob@example.com"],
                [b"carol@example.com", b"dave@example.com"],
                [b"erin@example.com"],
            ],
        )
        for job in jobs:
            self.assertTrue(job.done)
            self.assertEqual(set(self.kinds(job).values()), {"delivered"})
        verbs = [c.split(b" ")[0].split(b":")[0].upper() for c in primary.sessions[0].commands]
        # A completed transaction needs no RSET (Twisted sends one, a round trip a message).
        self.assertEqual(verbs.count(b"RSET"), 0)
        self.assertEqual(verbs.count(b"MAIL"), 3)
        self.assertEqual(verbs[-1], b"QUIT")

    @defer.inlineCallbacks
    def test_finished_jobs_are_skipped(self) -> Any:
        primary = self.primary()
        done, todo = self.job(("x@example.com",)), self.job()
        done.outcomes["x@example.com"] = Outcome("delivered", 250, "earlier")
        yield self.deliver(primary, [done, todo])
        self.assertEqual([t.rcpts for t in primary.complete], [[b"bob@example.com"]])

    @defer.inlineCallbacks
    def test_finished_jobs_stay_finished_when_a_candidate_fails(self) -> Any:
        primary = self.primary()
        done, todo = self.job(("x@example.com",)), self.job()
        earlier = Outcome("delivered", 250, "2.0.0 earlier")
        done.outcomes["x@example.com"] = earlier
        yield self.deliver([closed_port(), primary], [done, todo])
        self.assertEqual(done.outcomes, {"x@example.com": earlier})
        self.assertEqual([t.rcpts for t in primary.complete], [[b"bob@example.com"]])

    @defer.inlineCallbacks
    def test_probe_without_jobs(self) -> Any:
        primary = self.primary()
        attempt = yield self.deliver(primary, [])
        self.assertTrue(attempt.connected)
        self.assertEqual(primary.transactions, [])
        self.assertEqual(primary.sessions[0].commands[-1], b"QUIT")


class SerialOutcomeTests(OutcomeTests):
    """The same outcomes from a primary that does not offer PIPELINING (one command, one
    reply, Twisted's own sequence)."""

    def primary(self, implicit_tls: Any = None, **kw: Any) -> FakePrimary:
        kw.setdefault("pipelining", False)
        return super().primary(implicit_tls, **kw)


class PipeliningTests(WireTestCase):
    """RFC 2920 on the client side: MAIL, every RCPT and DATA go in one write."""

    def command_packets(self, primary: FakePrimary) -> list[list[bytes]]:
        return [
            [line.split(b" ")[0].split(b":")[0].upper() for line in packet.split(b"\r\n") if line]
            for packet in primary.sessions[0].packets
        ]

    @defer.inlineCallbacks
    def test_mail_rcpts_and_data_in_one_packet(self) -> Any:
        primary = self.primary()
        jobs = [self.job(("a@example.com", "b@example.com")), self.job(("c@example.com",))]
        yield self.deliver(primary, jobs)
        packets = self.command_packets(primary)
        self.assertIn([b"MAIL", b"RCPT", b"RCPT", b"DATA"], packets)
        self.assertIn([b"MAIL", b"RCPT", b"DATA"], packets)
        self.assertEqual(len(primary.complete), 2)

    @defer.inlineCallbacks
    def test_serial_without_pipelining(self) -> Any:
        primary = self.primary(pipelining=False)
        yield self.deliver(primary, [self.job(("a@example.com", "b@example.com"))])
        packets = self.command_packets(primary)
        self.assertIn([b"MAIL"], packets)
        self.assertIn([b"RCPT"], packets)
        self.assertIn([b"DATA"], packets)
        self.assertNotIn([b"MAIL", b"RCPT", b"RCPT", b"DATA"], packets)

    @defer.inlineCallbacks
    def test_no_recipient_accepted_then_rset_before_the_next_message(self) -> Any:
        """MAIL accepted, every RCPT refused, DATA refused: the transaction is open, so RSET
        comes before the next MAIL; after a completed one, no RSET."""
        for pipelining in (True, False):
            primary = self.primary(
                pipelining=pipelining, rcpt_replies={"x@example.com": (550, "5.1.1 no")}
            )
            first, second, third = self.job(("x@example.com",)), self.job(), self.job()
            yield self.deliver(primary, [first, second, third])
            self.assertEqual(self.kinds(first), {"x@example.com": "permfail"})
            self.assertEqual(self.kinds(second), {"bob@example.com": "delivered"})
            self.assertEqual(self.kinds(third), {"bob@example.com": "delivered"})
            verbs = [c.split(b" ")[0].split(b":")[0].upper() for c in primary.sessions[0].commands]
            mails = [i for i, v in enumerate(verbs) if v == b"MAIL"]
            self.assertEqual(verbs[mails[1] - 1], b"RSET", (pipelining, verbs))
            self.assertNotEqual(verbs[mails[2] - 1], b"RSET", (pipelining, verbs))
            self.assertEqual(verbs.count(b"RSET"), 1)

    @defer.inlineCallbacks
    def test_mail_refused_pipelined_consumes_every_reply(self) -> Any:
        """MAIL refused: the RCPT and DATA replies that follow (503s) are read and dropped,
        the recipients get the MAIL reply, and the session goes on in step."""
        primary = self.primary(mail_reply=(452, "4.3.1 no room"))
        first = self.job(("a@example.com", "b@example.com"))
        second = self.job(("c@example.com",))
        attempt = yield self.deliver(primary, [first, second])
        self.assertTrue(attempt.connected)
        self.assertFalse(attempt.broken)
        for job in (first, second):
            self.assertEqual(set(self.kinds(job).values()), {"tempfail"})
            self.assertTrue(all(o.code == 452 for o in job.outcomes.values()))
        self.assertEqual(primary.sessions[0].commands[-1], b"QUIT")


class ServerClosingTests(WireTestCase):
    """421 anywhere means the target is closing the session (RFC 5321 3.8)."""

    @defer.inlineCallbacks
    def test_421_at_mail_ends_the_session_and_nothing_counts_as_tried(self) -> Any:
        for pipelining in (True, False):
            primary = self.primary(pipelining=pipelining, mail_reply=(421, "4.3.2 closing"))
            jobs = [self.job(), self.job(("carol@example.com",))]
            attempt = yield self.deliver(primary, jobs)
            self.assertTrue(attempt.broken, pipelining)
            for job in jobs:
                self.assertEqual(set(self.kinds(job).values()), {"tempfail"})
                self.assertFalse(any(o.tried for o in job.outcomes.values()), pipelining)
            mails = [c for c in primary.sessions[0].commands if c.upper().startswith(b"MAIL")]
            self.assertEqual(len(mails), 1, pipelining)  # no second MAIL into a closing session


class DataWithoutRecipientsTests(WireTestCase):
    @defer.inlineCallbacks
    def test_354_without_an_accepted_recipient_gets_the_lone_dot(self) -> Any:
        """RFC 2920 3.1: a server that answers 354 although every RCPT was refused gets a lone
        dot; the recipients keep their own (permanent) refusals and the session goes on."""
        primary = self.primary(rcpt_replies={"x@example.com": (550, "5.1.1 no such user")})
        real_data = primary.protocol.smtp_DATA

        def data_anyway(proto: Any, arg: bytes) -> None:
            if proto.txn is not None and not proto.txn.rcpts:
                proto.txn.rcpts.append(b"(none)")  # misbehave: accept DATA all the same
            real_data(proto, arg)

        primary.protocol = type("Lax", (primary.protocol,), {"smtp_DATA": data_anyway})
        first, second = self.job(("x@example.com",)), self.job()
        attempt = yield self.deliver(primary, [first, second])
        self.assertFalse(attempt.broken)
        self.assertEqual(self.kinds(first), {"x@example.com": "permfail"})
        self.assertEqual(first.outcomes["x@example.com"].code, 550)
        self.assertEqual(self.kinds(second), {"bob@example.com": "delivered"})
        self.assertEqual(primary.complete[0].message, b"")  # the lone dot


class GateTests(WireTestCase):
    """The caller's gate: connect and EHLO go on, MAIL waits until the state is on disk."""

    def test_mail_waits_for_the_gate(self) -> None:
        opened: defer.Deferred = defer.Deferred()
        job = self.job()
        job.gate = Gate(opened)
        factory = SenderFactory([job], self.settings(), None, "[127.0.0.1]:25")
        proto = factory.buildProtocol(None)
        transport = StringTransport()
        proto.makeConnection(transport)
        proto.dataReceived(b"220 primary.test ESMTP\r\n")
        proto.dataReceived(b"250-primary.test\r\n250 PIPELINING\r\n")
        self.assertTrue(transport.value().startswith(b"EHLO"))
        self.assertNotIn(b"MAIL", transport.value())  # EHLO done, the gate is shut
        opened.callback(None)
        self.assertIn(b"MAIL FROM:<" + SENDER.encode() + b">", transport.value())
        self.assertIn(b"RCPT TO:<bob@example.com>\r\nDATA\r\n", transport.value())
        proto.setTimeout(None)  # no reply timer left in the reactor

    @defer.inlineCallbacks
    def test_a_failed_gate_sends_nothing_and_tries_nothing(self) -> Any:
        primary = self.primary()
        job = self.job()
        job.gate = Gate(defer.fail(OSError(28, "No space left on device")))
        attempt = yield self.deliver(primary, [job])
        self.assertEqual(primary.transactions, [])
        outcome = job.outcomes["bob@example.com"]
        self.assertEqual((outcome.kind, outcome.tried), ("tempfail", False))
        self.assertIn("No space left", outcome.text)
        self.assertFalse(attempt.broken)

    @defer.inlineCallbacks
    def test_a_refused_connection_counts_as_a_try(self) -> Any:
        job = self.job()
        yield self.deliver([closed_port()], [job])
        self.assertTrue(job.outcomes["bob@example.com"].tried)


class ScriptedSessionTests(SynchronousTestCase):
    """The sender against a scripted peer on a StringTransport: one reply at a time."""

    def session(self, jobs: list[Job], settings: Settings | None = None) -> tuple[Any, Any]:
        settings = settings or Settings("mx2.example.net", reply_timeout=10.0)
        factory = SenderFactory(jobs, settings, None, "[127.0.0.1]:25")
        self.attempts: list[Attempt] = []
        factory.finished.addCallback(self.attempts.append)
        proto = factory.buildProtocol(None)
        proto.callLater = Clock().callLater  # no real timers
        transport = StringTransport()
        proto.makeConnection(transport)
        self.addCleanup(proto.setTimeout, None)
        return proto, transport

    def end(self, proto: Any) -> Attempt:
        proto.connectionLost(Failure(ConnectionDone()))
        proto.factory.clientConnectionLost(None, Failure(ConnectionDone()))
        (attempt,) = self.attempts
        return attempt

    def job(self, rcpt: str = "bob@example.com", size: int = 10) -> Job:
        return Job("Q1", SENDER, [rcpt], "/nonexistent", size)

    def test_refused_ehlo_and_helo_end_the_session_and_count(self) -> None:
        job = self.job()
        proto, t = self.session([job])
        proto.dataReceived(b"220 x ESMTP\r\n")
        proto.dataReceived(b"550 5.7.1 no EHLO for you\r\n")
        self.assertIn(b"HELO ", t.value())
        t.clear()
        proto.dataReceived(b"550 5.7.1 no HELO either\r\n")
        self.assertNotIn(b"HELO", t.value())  # Twisted would send HELO again, for ever
        attempt = self.end(proto)
        self.assertTrue(job.outcomes["bob@example.com"].tried)
        self.assertTrue(attempt.broken or not attempt.connected)

    def test_probe_cut_before_quit_is_answered_is_not_up(self) -> None:
        proto, t = self.session([])
        proto.dataReceived(b"220 x ESMTP\r\n")
        proto.dataReceived(b"250 x\r\n")
        self.assertIn(b"QUIT", t.value())
        attempt = self.end(proto)  # no 221
        self.assertTrue(attempt.broken)

    def test_421_to_the_lone_dot_sends_no_more_mail(self) -> None:
        first, second = self.job("x@example.com"), self.job("y@example.com")
        proto, t = self.session([first, second])
        proto.dataReceived(b"220 x ESMTP\r\n250-x\r\n250 PIPELINING\r\n")
        proto.dataReceived(b"250 ok\r\n550 5.1.1 no\r\n354 go\r\n")  # MAIL, RCPT, DATA
        self.assertTrue(t.value().endswith(b".\r\n"))  # the lone dot
        t.clear()
        proto.dataReceived(b"421 4.3.2 closing\r\n")
        self.assertNotIn(b"MAIL", t.value())
        self.end(proto)
        self.assertEqual(first.outcomes["x@example.com"].code, 550)
        self.assertFalse(second.outcomes["y@example.com"].tried)

    def test_a_reply_while_waiting_at_the_gate_ends_the_session_once(self) -> None:
        opened: defer.Deferred = defer.Deferred()
        job = self.job()
        job.gate = Gate(opened)
        proto, t = self.session([job], Settings("mx2.example.net", reply_timeout=10.0))
        proto.dataReceived(b"220 x ESMTP\r\n250-x\r\n250 PIPELINING\r\n")
        t.clear()
        proto.dataReceived(b"421 4.4.2 idle too long\r\n")  # unasked for, during the wait
        opened.callback(None)
        self.assertNotIn(b"MAIL", t.value())
        self.end(proto)
        self.assertFalse(job.outcomes["bob@example.com"].tried)

    def test_many_jobs_behind_a_failed_gate(self) -> None:
        gate = Gate(defer.fail(OSError(28, "No space left on device")))
        jobs = [Job(f"Q{i}", SENDER, ["bob@example.com"], "/nonexistent", 10) for i in range(3000)]
        for job in jobs:
            job.gate = gate
        proto, t = self.session(jobs)
        proto.dataReceived(b"220 x ESMTP\r\n250-x\r\n250 PIPELINING\r\n")  # no RecursionError
        self.assertNotIn(b"MAIL", t.value())
        self.assertIn(b"QUIT", t.value())
        self.assertTrue(all(j.done for j in jobs))


class ExtensionTests(WireTestCase):
    @defer.inlineCallbacks
    def test_size_and_body_when_offered(self) -> Any:
        primary = self.primary()
        eight, seven = self.job(eight_bit=True), self.job(body=MESSAGE + b"more\r\n")
        yield self.deliver(primary, [eight, seven])
        first, second = primary.complete
        self.assertEqual(
            first.mail, b"MAIL FROM:<%s> SIZE=%d BODY=8BITMIME" % (SENDER.encode(), eight.size)
        )
        self.assertEqual(second.mail, b"MAIL FROM:<%s> SIZE=%d" % (SENDER.encode(), seven.size))

    @defer.inlineCallbacks
    def test_no_parameters_when_not_offered(self) -> Any:
        primary = self.primary(size=None, eight_bit=False)
        job = self.job(eight_bit=True)
        yield self.deliver(primary, [job])
        self.assertEqual(primary.complete[0].mail, b"MAIL FROM:<%s>" % SENDER.encode())


class ConnectionTests(WireTestCase):
    @defer.inlineCallbacks
    def test_refused_then_next_candidate(self) -> Any:
        primary = self.primary()
        job = self.job()
        attempt = yield self.deliver([closed_port(), primary], [job])
        self.assertTrue(attempt.connected)
        self.assertEqual(attempt.remote, f"{NAME}[127.0.0.1]:{primary.portnum}")
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertEqual(len(primary.complete), 1)

    @defer.inlineCallbacks
    def test_all_refused(self) -> Any:
        job = self.job(("bob@example.com", "carol@example.com"))
        attempt = yield self.deliver([closed_port(), closed_port()], [job])
        self.assertIsInstance(attempt, Attempt)
        self.assertFalse(attempt.connected)
        self.assertEqual(set(self.kinds(job).values()), {"tempfail"})
        self.assertIn("refused", job.outcomes["bob@example.com"].text.lower())
        self.assertEqual(job.outcomes["bob@example.com"].code, 0)

    @defer.inlineCallbacks
    def test_no_candidates(self) -> Any:
        job = self.job()
        attempt = yield deliver(reactor, [], self.settings(), [job])
        self.assertFalse(attempt.connected)
        self.assertEqual(self.kinds(job), {"bob@example.com": "tempfail"})

    @defer.inlineCallbacks
    def test_421_greeting_tries_next_candidate(self) -> Any:
        busy = self.primary(greeting=(421, "4.3.2 too busy"))
        primary = self.primary()
        job = self.job()
        attempt = yield self.deliver([busy, primary], [job])
        self.assertTrue(attempt.connected)
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertEqual(busy.transactions, [])
        self.assertEqual(len(primary.complete), 1)

    @defer.inlineCallbacks
    def test_421_greeting_everywhere(self) -> Any:
        busy = self.primary(greeting=(421, "4.3.2 too busy"))
        job = self.job()
        attempt = yield self.deliver(busy, [job])
        self.assertFalse(attempt.connected)
        self.assertEqual(self.kinds(job), {"bob@example.com": "tempfail"})
        self.assertIn("421 4.3.2 too busy", attempt.error)

    @defer.inlineCallbacks
    def test_silent_primary_times_out(self) -> Any:
        mute = self.primary(greeting=None)
        job = self.job()
        started = time.monotonic()
        attempt = yield self.deliver(mute, [job], self.settings(reply_timeout=0.3))
        self.assertLess(time.monotonic() - started, 1.0)
        self.assertFalse(attempt.connected)
        self.assertEqual(self.kinds(job), {"bob@example.com": "tempfail"})
        self.assertIn("greeting: timed out", job.outcomes["bob@example.com"].text)


class TLSTests(WireTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.ca = TestCA(self.tmp)

    def tls_settings(self, security: str, **kw: Any) -> Settings:
        return self.settings(
            security=security, verify_certificate=True, ca_file=str(self.ca.ca_file), **kw
        )

    @defer.inlineCallbacks
    def test_starttls_required_verified(self) -> Any:
        primary = self.primary(tls_context=self.ca.server_context(NAME))
        job = self.job()
        attempt = yield self.deliver(primary, [job], self.tls_settings("starttls_required"))
        self.assertTrue(attempt.connected)
        self.assertFalse(attempt.tls_failed)
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertEqual(len(primary.complete), 1)
        self.assertTrue(primary.complete[0].tls)
        self.assertEqual(primary.complete[0].message, MESSAGE)
        commands = primary.sessions[0].commands
        self.assertEqual(commands[1], b"STARTTLS")
        self.assertEqual(commands[2], b"EHLO mx2.example.net")  # EHLO again inside TLS

    @defer.inlineCallbacks
    def test_starttls_required_wrong_name_is_refused(self) -> Any:
        primary = self.primary(tls_context=self.ca.server_context("other.example.org"))
        job = self.job()
        attempt = yield self.deliver(primary, [job], self.tls_settings("starttls_required"))
        self.assertFalse(attempt.connected)
        self.assertEqual(self.kinds(job), {"bob@example.com": "tempfail"})
        self.assertEqual(primary.transactions, [])
        self.assertEqual(primary.connections, 1)  # no plain-text second try
        self.assertIn(
            "starttls: TLS certificate not valid for the target's name",
            job.outcomes["bob@example.com"].text,
        )
        self.assertFalse(any(c.startswith(b"MAIL") for c in primary.commands()))

    @defer.inlineCallbacks
    def test_starttls_required_wrong_name_then_next_candidate(self) -> Any:
        wrong = self.primary(tls_context=self.ca.server_context("other.example.org"))
        right = self.primary(tls_context=self.ca.server_context(NAME))
        job = self.job()
        attempt = yield self.deliver([wrong, right], [job], self.tls_settings("starttls_required"))
        self.assertTrue(attempt.connected)
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertEqual(wrong.transactions, [])
        self.assertTrue(right.complete[0].tls)

    @defer.inlineCallbacks
    def test_starttls_required_not_offered(self) -> Any:
        primary = self.primary()
        job = self.job()
        attempt = yield self.deliver(primary, [job], self.tls_settings("starttls_required"))
        self.assertFalse(attempt.connected)
        self.assertEqual(self.kinds(job), {"bob@example.com": "tempfail"})
        self.assertIn("ehlo: the target does not offer STARTTLS", attempt.error)
        self.assertEqual(primary.transactions, [])

    @defer.inlineCallbacks
    def test_self_signed_certificate_is_refused_when_verifying(self) -> Any:
        (self.tmp / "other").mkdir()
        other_ca = TestCA(self.tmp / "other", name="someone else")
        primary = self.primary(tls_context=other_ca.server_context(NAME))
        job = self.job()
        yield self.deliver(primary, [job], self.tls_settings("starttls_required"))
        self.assertEqual(self.kinds(job), {"bob@example.com": "tempfail"})
        self.assertIn("certificate verify failed", job.outcomes["bob@example.com"].text)
        self.assertEqual(primary.transactions, [])

    @defer.inlineCallbacks
    def test_unverified_tls_accepts_any_certificate(self) -> Any:
        primary = self.primary(tls_context=self.ca.server_context("other.example.org"))
        job = self.job()
        settings = self.settings(security="starttls_required", verify_certificate=False)
        yield self.deliver(primary, [job], settings)
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertTrue(primary.complete[0].tls)

    @defer.inlineCallbacks
    def test_opportunistic_not_offered_is_plain_text(self) -> Any:
        primary = self.primary()
        job = self.job()
        attempt = yield self.deliver(primary, [job], self.tls_settings("starttls"))
        self.assertTrue(attempt.connected)
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertFalse(primary.complete[0].tls)
        self.assertEqual(primary.connections, 1)

    @defer.inlineCallbacks
    def test_opportunistic_uses_tls_when_offered(self) -> Any:
        primary = self.primary(tls_context=self.ca.server_context(NAME))
        job = self.job()
        yield self.deliver(primary, [job], self.tls_settings("starttls"))
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertTrue(primary.complete[0].tls)

    @defer.inlineCallbacks
    def test_opportunistic_handshake_failure_falls_back_to_plain_text(self) -> Any:
        primary = self.primary(tls_context=self.ca.server_context("other.example.org"))
        job = self.job()
        attempt = yield self.deliver(primary, [job], self.tls_settings("starttls"))
        self.assertTrue(attempt.connected)
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertEqual(primary.connections, 2)  # a new connection for the plain-text try
        self.assertIn(b"STARTTLS", primary.sessions[0].commands)
        self.assertNotIn(b"STARTTLS", primary.sessions[1].commands)
        self.assertEqual(len(primary.complete), 1)
        self.assertFalse(primary.complete[0].tls)
        self.assertEqual(primary.complete[0].connection, 2)

    @defer.inlineCallbacks
    def test_opportunistic_starttls_refused_falls_back(self) -> Any:
        primary = self.primary(tls_context=self.ca.server_context(NAME))
        original = type(primary).buildProtocol

        def build(factory: Any, addr: Any) -> Any:
            proto = original(factory, addr)
            proto.smtp_STARTTLS = lambda arg: proto.reply(454, "4.7.0 TLS not available now")
            return proto

        self.patch(type(primary), "buildProtocol", build)
        job = self.job()
        yield self.deliver(primary, [job], self.tls_settings("starttls"))
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertFalse(primary.complete[0].tls)

    @defer.inlineCallbacks
    def test_implicit_tls(self) -> Any:
        primary = self.primary(implicit_tls=self.ca.server_context(NAME))
        job = self.job()
        attempt = yield self.deliver(primary, [job], self.tls_settings("ssl"))
        self.assertTrue(attempt.connected)
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertTrue(primary.complete[0].tls)
        self.assertNotIn(b"STARTTLS", primary.sessions[0].commands)
        self.assertEqual(primary.complete[0].message, MESSAGE)

    @defer.inlineCallbacks
    def test_implicit_tls_wrong_name_is_refused(self) -> Any:
        primary = self.primary(implicit_tls=self.ca.server_context("other.example.org"))
        job = self.job()
        attempt = yield self.deliver(primary, [job], self.tls_settings("ssl"))
        self.assertFalse(attempt.connected)
        self.assertEqual(self.kinds(job), {"bob@example.com": "tempfail"})
        self.assertIn("TLS certificate not valid for the target's name", attempt.error)
        self.assertEqual(primary.transactions, [])

    @defer.inlineCallbacks
    def test_none_never_sends_starttls(self) -> Any:
        primary = self.primary(tls_context=self.ca.server_context(NAME))
        job = self.job()
        yield self.deliver(primary, [job], self.tls_settings("none"))
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertNotIn(b"STARTTLS", primary.sessions[0].commands)
        self.assertFalse(primary.complete[0].tls)

    @defer.inlineCallbacks
    def test_dots_at_chunk_boundaries_over_tls(self) -> Any:
        body = body_with_dots_at_chunk_boundaries()
        primary = self.primary(tls_context=self.ca.server_context(NAME))
        job = self.job(body=body)
        yield self.deliver(primary, [job], self.tls_settings("starttls_required"))
        self.assertEqual([t.message for t in primary.complete], [body])


class AuthTests(WireTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.ca = TestCA(self.tmp)

    def auth_settings(self, security: str, password: bytes = PASSWORD, **kw: Any) -> Settings:
        return self.settings(
            security=security,
            verify_certificate=True,
            ca_file=str(self.ca.ca_file),
            username=USER.decode(),
            password=password.decode(),
            **kw,
        )

    def auth_primary(self, mechanisms: tuple[str, ...], tls: bool = True) -> FakePrimary:
        return self.primary(
            tls_context=self.ca.server_context(NAME) if tls else None,
            credentials={USER: PASSWORD},
            auth_mechanisms=mechanisms,
        )

    @defer.inlineCallbacks
    def check_auth_after_tls(self, mechanism: str) -> Any:
        primary = self.auth_primary((mechanism,))
        job = self.job()
        attempt = yield self.deliver(primary, [job], self.auth_settings("starttls_required"))
        self.assertTrue(attempt.connected)
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        session = primary.sessions[0]
        self.assertEqual(session.auth_attempts, [(mechanism.encode(), USER, PASSWORD)])
        txn = primary.complete[0]
        self.assertEqual((txn.tls, txn.auth), (True, USER))
        verbs = [c.split(b" ")[0] for c in session.commands]
        self.assertLess(verbs.index(b"STARTTLS"), verbs.index(b"AUTH"))

    def test_auth_plain_after_starttls(self) -> Any:
        return self.check_auth_after_tls("PLAIN")

    def test_auth_login_after_starttls(self) -> Any:
        return self.check_auth_after_tls("LOGIN")

    @defer.inlineCallbacks
    def test_auth_over_implicit_tls(self) -> Any:
        primary = self.primary(
            implicit_tls=self.ca.server_context(NAME), credentials={USER: PASSWORD}
        )
        job = self.job()
        yield self.deliver(primary, [job], self.auth_settings("ssl"))
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertEqual(primary.complete[0].auth, USER)

    @defer.inlineCallbacks
    def test_no_auth_in_plain_text(self) -> Any:
        primary = self.auth_primary(("PLAIN", "LOGIN"), tls=False)
        for security in ("starttls", "none"):
            job = self.job()
            attempt = yield self.deliver(primary, [job], self.auth_settings(security))
            self.assertFalse(attempt.connected)
            self.assertEqual(self.kinds(job), {"bob@example.com": "tempfail"})
        self.assertEqual(primary.connections, 2)  # no plain-text retry with the password
        for session in primary.sessions:
            self.assertFalse(any(c.upper().startswith(b"AUTH") for c in session.commands))
            self.assertNotIn(base64.b64encode(b"\0" + USER + b"\0" + PASSWORD), session.commands)
        self.assertEqual(primary.transactions, [])

    @defer.inlineCallbacks
    def test_no_auth_in_plain_text_after_failed_handshake(self) -> Any:
        primary = self.primary(
            tls_context=self.ca.server_context("other.example.org"),
            credentials={USER: PASSWORD},
        )
        job = self.job()
        attempt = yield self.deliver(primary, [job], self.auth_settings("starttls"))
        self.assertFalse(attempt.connected)
        self.assertEqual(self.kinds(job), {"bob@example.com": "tempfail"})
        self.assertEqual(primary.connections, 1)
        self.assertEqual(primary.sessions[0].auth_attempts, [])

    @defer.inlineCallbacks
    def test_plaintext_auth_when_the_route_allows_it(self) -> Any:
        for mechanism in ("PLAIN", "LOGIN"):
            primary = self.auth_primary((mechanism,), tls=False)
            job = self.job()
            settings = self.auth_settings("none", allow_plaintext_auth=True)
            attempt = yield self.deliver(primary, [job], settings)
            self.assertTrue(attempt.connected)
            self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
            txn = primary.complete[0]
            self.assertEqual((txn.tls, txn.auth), (False, USER))
            self.assertEqual(
                primary.sessions[0].auth_attempts, [(mechanism.encode(), USER, PASSWORD)]
            )

    @defer.inlineCallbacks
    def test_wrong_password_is_tempfail(self) -> Any:
        primary = self.auth_primary(("PLAIN", "LOGIN"))
        job = self.job(("bob@example.com", "carol@example.com"))
        attempt = yield self.deliver(
            primary, [job], self.auth_settings("starttls_required", password=b"wrong")
        )
        self.assertEqual(set(self.kinds(job).values()), {"tempfail"})
        self.assertEqual(
            job.outcomes["bob@example.com"].text,
            "auth: 535 5.7.8 authentication credentials invalid",
        )
        self.assertFalse(attempt.tls_failed)
        self.assertEqual(primary.transactions, [])
        self.assertEqual(primary.connections, 1)
        # A refusal, not a lost connection: the try counts (retries run out, then a DSN),
        # and the target is not usable as it is.
        self.assertTrue(all(o.tried for o in job.outcomes.values()))
        self.assertTrue(attempt.broken)

    @defer.inlineCallbacks
    def test_probe_with_a_wrong_password_does_not_find_the_target_up(self) -> Any:
        primary = self.auth_primary(("PLAIN", "LOGIN"))
        settings = self.auth_settings("starttls_required", password=b"wrong")
        attempt = yield self.deliver(primary, [], settings)
        self.assertTrue(attempt.connected)
        self.assertTrue(attempt.broken)  # the scheduler's probe: still down

    @defer.inlineCallbacks
    def test_wrong_password_opportunistic_is_not_retried_in_plain_text(self) -> Any:
        primary = self.auth_primary(("PLAIN",))
        job = self.job()
        settings = self.auth_settings("starttls", password=b"wrong", allow_plaintext_auth=True)
        attempt = yield self.deliver(primary, [job], settings)
        self.assertFalse(attempt.tls_failed)
        self.assertEqual(self.kinds(job), {"bob@example.com": "tempfail"})
        self.assertEqual(primary.connections, 1)
        self.assertTrue(all(s.tls for s in primary.sessions))

    @defer.inlineCallbacks
    def test_auth_required_but_not_offered(self) -> Any:
        primary = self.primary(tls_context=self.ca.server_context(NAME))  # no AUTH at all
        job = self.job()
        yield self.deliver(primary, [job], self.auth_settings("starttls_required"))
        self.assertEqual(self.kinds(job), {"bob@example.com": "tempfail"})
        self.assertEqual(primary.transactions, [])
