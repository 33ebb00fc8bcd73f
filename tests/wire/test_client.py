"""Outbound delivery (mxbackup.wire.client) against a scripted primary on real 127.0.0.1 sockets.

Each test pins one behaviour of the issue's acceptance criteria or one fix of Twisted's
``ESMTPSender`` (pitfalls 11-13 of ``shared/reference/twisted-mail-pitfalls.md``) that the
client, written on ``LineReceiver`` since, keeps.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from fakeprimary import FakePrimary
from twisted.internet import defer, reactor
from wirecase import (
    MESSAGE,
    NAME,
    SENDER,
    WireTestCase,
    body_with_dots_at_chunk_boundaries,
    closed_port,
    collect,
    ready_now,
    reference_stuffing,
)

from mxbackup.wire.client import deliver
from mxbackup.wire.contract import Attempt


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
    def test_dots_at_chunk_boundaries_of_a_streamed_message(self) -> Any:
        body = body_with_dots_at_chunk_boundaries(streamed=True)
        primary = self.primary()
        job = self.job(body=body)
        yield self.deliver(primary, [job])
        self.assertEqual(self.kinds(job), {"bob@example.com": "delivered"})
        self.assertEqual(len(primary.transactions), 1)
        self.assertEqual(primary.complete[0].message, body)
        self.assertEqual(primary.complete[0].raw, reference_stuffing(body))

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
        import mxbackup.wire.body as smtp_out

        real_open = open

        def tracking_open(*args: Any, **kw: Any) -> Any:
            f = real_open(*args, **kw)
            opened.append(f)
            return f

        smtp_out.open = tracking_open  # type: ignore[attr-defined]
        self.addCleanup(delattr, smtp_out, "open")
        primary = self.primary(rcpt_replies={"carol@example.com": (550, "5.1.1 no")})
        big = MESSAGE * 3000  # over WHOLE_MESSAGE: streamed by the producer
        jobs = [self.job(), self.job(body=big), self.job(("carol@example.com",))]
        yield self.deliver(primary, jobs)
        self.assertEqual([t.message for t in primary.complete], [MESSAGE, big])
        self.assertEqual(len(opened), 2)  # the all-refused job's file is never opened
        self.assertTrue(all(f.closed for f in opened))

    @defer.inlineCallbacks
    def test_connection_lost_during_data_is_tempfail(self) -> Any:
        primary = self.primary(drop_after_data_bytes=5000)
        job = self.job(("bob@example.com", "carol@example.com"), body=MESSAGE * 500)
        attempt = yield self.deliver(primary, [job])
        self.assertTrue(attempt.connected)
        self.assertEqual(set(self.kinds(job).values()), {"tempfail"})
        self.assertTrue(self.out(job)["bob@example.com"].text.startswith("data: "))
        self.assertNotIn("producing", self.out(job)["bob@example.com"].text)
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
        ok, bad = self.out(job)["bob@example.com"], self.out(job)["nobody@example.com"]
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
        self.assertEqual(self.out(job)["later@example.com"].reply, "451 4.3.0 try later")

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
        self.assertEqual(self.out(job)["a@example.com"].reply, "550 5.1.1 unknown a")
        self.assertEqual(self.out(job)["b@example.com"].reply, "452 4.2.2 mailbox full")
        self.assertEqual(primary.transactions, [])

    @defer.inlineCallbacks
    def test_mail_from_550_fails_every_recipient(self) -> Any:
        primary = self.primary(mail_reply=(550, "5.7.1 sender rejected"))
        job = self.job(("bob@example.com", "carol@example.com"))
        attempt = yield self.deliver(primary, [job])
        self.assertTrue(attempt.connected)
        self.assertEqual(set(self.kinds(job).values()), {"permfail"})
        self.assertEqual(self.out(job)["carol@example.com"].reply, "550 5.7.1 sender rejected")

    @defer.inlineCallbacks
    def test_mail_from_451_defers_every_recipient(self) -> Any:
        primary = self.primary(mail_reply=(451, "4.7.1 greylisted"))
        job = self.job(("bob@example.com", "carol@example.com"))
        yield self.deliver(primary, [job])
        self.assertEqual(set(self.kinds(job).values()), {"tempfail"})
        self.assertEqual(self.out(job)["bob@example.com"].reply, "451 4.7.1 greylisted")

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
        self.assertEqual(self.out(second)["dave@example.com"].code, 550)

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
        self.assertEqual(self.out(job)["bob@example.com"].reply, "554 5.6.0 content rejected")
        self.assertEqual(self.out(job)["later@example.com"].reply, "450 4.2.1 busy")

    @defer.inlineCallbacks
    def test_data_451_defers(self) -> Any:
        primary = self.primary(data_reply=(451, "4.3.0 local error"))
        job = self.job(("bob@example.com", "carol@example.com"))
        yield self.deliver(primary, [job])
        self.assertEqual(set(self.kinds(job).values()), {"tempfail"})
        self.assertEqual(self.out(job)["bob@example.com"].code, 451)

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
            self.assertIn(job.qid, self.outcomes)
            self.assertEqual(set(self.kinds(job).values()), {"delivered"})
        verbs = [c.split(b" ")[0].split(b":")[0].upper() for c in primary.sessions[0].commands]
        # A completed transaction needs no RSET (Twisted sends one, a round trip a message).
        self.assertEqual(verbs.count(b"RSET"), 0)
        self.assertEqual(verbs.count(b"MAIL"), 3)
        self.assertEqual(verbs[-1], b"QUIT")

    @defer.inlineCallbacks
    def test_finished_jobs_are_skipped(self) -> Any:
        """A job with no recipient left is never sent; its result fires, empty."""
        primary = self.primary()
        done, todo = self.job(()), self.job()
        yield self.deliver(primary, [done, todo])
        self.assertEqual(dict(self.out(done)), {})
        self.assertEqual([t.rcpts for t in primary.complete], [[b"bob@example.com"]])

    @defer.inlineCallbacks
    def test_finished_jobs_stay_finished_when_a_candidate_fails(self) -> Any:
        """A candidate that fails finishes nothing: each result fires once (``collect``
        checks it), with what the candidate that took the job said."""
        primary = self.primary()
        first, second = self.job(("x@example.com",)), self.job()
        attempt = yield self.deliver([closed_port(), primary], [first, second])
        self.assertEqual(self.kinds(first), {"x@example.com": "delivered"})
        self.assertEqual(self.kinds(second), {"bob@example.com": "delivered"})
        for job in (first, second):
            self.assertEqual({o.remote for o in self.out(job).values()}, {attempt.remote})
        self.assertEqual(
            [t.rcpts for t in primary.complete], [[b"x@example.com"], [b"bob@example.com"]]
        )

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
            self.assertTrue(all(o.code == 452 for o in self.out(job).values()))
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
                self.assertFalse(any(o.tried for o in self.out(job).values()), pipelining)
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
        self.assertEqual(self.out(first)["x@example.com"].code, 550)
        self.assertEqual(self.kinds(second), {"bob@example.com": "delivered"})
        self.assertEqual(primary.complete[0].message, b"")  # the lone dot


class ReadyTests(WireTestCase):
    """The durability barrier: connect and EHLO go on, MAIL waits until the state is on disk."""

    @defer.inlineCallbacks
    def test_a_failed_ready_sends_nothing_and_tries_nothing(self) -> Any:
        primary = self.primary()
        jobs = [self.job(), self.job(("carol@example.com",))]

        def ready() -> defer.Deferred[None]:
            return defer.fail(OSError(28, "No space left on device"))

        attempt = yield self.deliver(primary, jobs, ready=ready)
        self.assertEqual(primary.transactions, [])
        for job in jobs:
            (outcome,) = self.out(job).values()
            self.assertEqual((outcome.kind, outcome.tried), ("tempfail", False))
            self.assertEqual(outcome.text, "local: [Errno 28] No space left on device")
        self.assertFalse(attempt.broken)
        self.assertEqual(primary.sessions[0].commands[-1], b"QUIT")

    @defer.inlineCallbacks
    def test_a_refused_connection_counts_as_a_try(self) -> Any:
        job = self.job()
        yield self.deliver([closed_port()], [job])
        self.assertTrue(self.out(job)["bob@example.com"].tried)

    @defer.inlineCallbacks
    def test_ready_is_called_once_after_ehlo_and_never_by_a_probe(self) -> Any:
        primary = self.primary()
        seen: list[list[bytes]] = []

        def ready() -> defer.Deferred[None]:
            seen.append(list(primary.commands()))
            return defer.succeed(None)

        yield self.deliver([closed_port(), primary], [self.job(), self.job()], ready=ready)
        (commands,) = seen  # once, for both jobs, whatever the candidates
        self.assertEqual(commands, [b"EHLO mx2.example.net"])  # EHLO done, no MAIL yet
        seen.clear()
        yield self.deliver(primary, [], ready=ready)
        self.assertEqual(seen, [])


class ContractTests(WireTestCase):
    """The client takes frozen jobs, changes nothing it is given, reports per job."""

    @defer.inlineCallbacks
    def test_jobs_are_immutable_and_left_as_they_were(self) -> Any:
        primary = self.primary(rcpt_replies={"x@example.com": (550, "5.1.1 no")})
        jobs = [self.job(("bob@example.com", "x@example.com")), self.job()]
        copies = [dataclasses.replace(job) for job in jobs]
        with self.assertRaises(dataclasses.FrozenInstanceError):
            jobs[0].recipients = ()  # type: ignore[misc]
        yield self.deliver(primary, jobs)
        self.assertEqual(jobs, copies)
        self.assertIsInstance(jobs[0].recipients, tuple)
        with self.assertRaises(TypeError):  # the outcomes handed back are read-only too
            self.out(jobs[0])["bob@example.com"] = self.out(jobs[1])["bob@example.com"]  # type: ignore[index]

    @defer.inlineCallbacks
    def test_each_result_fires_when_its_transaction_ends(self) -> Any:
        primary = self.primary()
        jobs = [self.job(), self.job(("carol@example.com",)), self.job()]
        delivery = deliver(reactor, [self.candidate(primary)], self.settings(), jobs, ready_now)
        seen: list[tuple[int, int, bool, bool]] = []
        for i, result in enumerate(delivery.results):
            result.addCallback(
                lambda _, i=i: seen.append(
                    (
                        i,
                        len(primary.complete),
                        b"QUIT" in primary.commands(),
                        delivery.done.called,
                    )
                )
            )
        attempt = yield delivery.done
        self.assertTrue(attempt.connected)
        # each result fired as soon as its message was taken, while the session went on
        self.assertEqual(seen, [(0, 1, False, False), (1, 2, False, False), (2, 3, False, False)])

    @defer.inlineCallbacks
    def test_results_never_fail(self) -> Any:
        """Whatever happens (here no candidate at all), each result fires with a value."""
        jobs = [self.job(), self.job()]
        delivery = deliver(reactor, [], self.settings(), jobs, ready_now)
        results = yield defer.gatherResults(list(delivery.results))
        self.assertEqual([r.job for r in results], jobs)
        attempt = yield delivery.done
        self.assertFalse(attempt.connected)


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
        self.assertIn("refused", self.out(job)["bob@example.com"].text.lower())
        self.assertEqual(self.out(job)["bob@example.com"].code, 0)

    @defer.inlineCallbacks
    def test_no_candidates(self) -> Any:
        job = self.job()
        attempt = yield collect(
            self, deliver(reactor, [], self.settings(), [job], ready_now), [job], self.outcomes
        )
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
        self.assertIn("greeting: timed out", self.out(job)["bob@example.com"].text)
