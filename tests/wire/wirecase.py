"""Shared by the wire tests: a scripted primary on real 127.0.0.1 sockets, jobs from files,
settings, and ``deliver`` wrapped so each job's result is collected (and checked to fire exactly
once, before ``done``)."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from fakeprimary import FakePrimary
from twisted.internet import defer, reactor
from twisted.trial.unittest import TestCase

from mxbackup.wire.body import WHOLE_MESSAGE
from mxbackup.wire.client import deliver
from mxbackup.wire.contract import Attempt, Candidate, Delivery, Job, JobResult, Outcome, Settings

CHUNK = 2**14  # mxbackup.wire.body.CHUNK (Twisted's FileSender.CHUNK_SIZE too)
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


def closed_port() -> int:
    """A port nothing listens on: bound, read, closed."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def body_with_dots_at_chunk_boundaries(streamed: bool = False) -> bytes:
    """A CRLF message whose lines at 16 KiB, 32 KiB and 48 KiB start with a dot: a lone "."
    (which would end DATA), a smuggled second transaction, and a ".." line.  ``streamed``:
    followed by lone dots at every chunk boundary up to past ``WHOLE_MESSAGE``, so the message
    goes through the producer, chunk by chunk."""
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
    for k in range(4, WHOLE_MESSAGE // CHUNK + 3) if streamed else ():
        fill_to(k * CHUNK)
        out += b".\r\n"
    out += b"the end\r\n"
    assert (len(out) > WHOLE_MESSAGE) == streamed
    return bytes(out)


def ready_now() -> defer.Deferred[None]:
    return defer.succeed(None)


def collect(test: Any, delivery: Delivery, jobs: Sequence[Job], into: dict) -> defer.Deferred:
    """Record each job's outcomes in ``into`` (by qid) as its result fires; ``done``'s Attempt
    after checking every result fired, once, for its own job, with one outcome per recipient."""
    test.assertEqual(len(delivery.results), len(jobs))
    for job, result in zip(jobs, delivery.results, strict=True):

        def record(r: JobResult, job: Job = job) -> JobResult:
            test.assertIs(r.job, job)
            test.assertNotIn(job.qid, into)  # fires once
            test.assertEqual(set(r.outcomes), set(job.recipients))
            into[job.qid] = r.outcomes
            return r

        result.addCallback(record)

    def check(attempt: Attempt) -> Attempt:
        test.assertIsInstance(attempt, Attempt)
        test.assertTrue(all(r.called for r in delivery.results))  # done fires after them
        test.assertEqual({j.qid for j in jobs}, set(into) & {j.qid for j in jobs})
        return attempt

    return delivery.done.addCallback(check)


class WireTestCase(TestCase):
    """Helpers: a fake primary that is stopped in cleanup, jobs from files, settings."""

    timeout = 20  # seconds; a hung session fails the test instead of stalling the run

    def setUp(self) -> None:
        # not trial's mktemp: under pytest it writes into the working directory
        self.tmp = Path(tempfile.mkdtemp(prefix="mx-out-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)
        self._qids = 0
        self.outcomes: dict[str, Mapping[str, Outcome]] = {}

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
        return Job(qid, sender, tuple(recipients), str(path), len(body), eight_bit)

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
        ready: Any = ready_now,
    ) -> defer.Deferred:
        """Fires with the Attempt; each job's outcomes are in ``self.out(job)``."""
        if not isinstance(targets, list):
            targets = [targets]
        candidates = [self.candidate(t, name) for t in targets]
        delivery = deliver(reactor, candidates, settings or self.settings(), jobs, ready)
        return collect(self, delivery, jobs, self.outcomes)

    def out(self, job: Job) -> Mapping[str, Outcome]:
        return self.outcomes[job.qid]

    def kinds(self, job: Job) -> dict[str, str]:
        return {rcpt: outcome.kind for rcpt, outcome in self.out(job).items()}
