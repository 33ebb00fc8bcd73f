"""The spool process: rounds run in a child with a GIL of its own; its failure is a 4xx,
never a loss; it dies with the server."""

from __future__ import annotations

import io
import os
import shutil
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from twisted.internet import defer, error, reactor
from twisted.logger import LogLevel, globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from helpers import (
    Twistd,
    base_config,
    children_of,
    one_recipient_envelope,
    process_gone,
    spool_files,
    spool_frame,
    spool_replies,
    write_config,
)
from mxbackup.queue import rounds, spoolchild
from mxbackup.queue.rounds import RoundOp, run_round
from mxbackup.queue.spool import Spool
from mxbackup.queue.spoolproc import SpoolProcess, SpoolProcessError, SpoolStopping

SPOOLCHILD = b"mxbackup.queue.spoolchild"  # (the prefetch process is a child too)


def test_serve_runs_rounds_in_order_and_answers_a_bad_request(tmp_path: Path) -> None:
    spool = Spool(str(tmp_path / "spool"), lambda fn, *a: defer.succeed(None))
    spool.open()
    root, tmp = spool.root, spool.path("tmp", "Q1.env")
    commit = RoundOp("commit", "Q1", tmp, one_recipient_envelope("Q1", 7).to_json(), b"hello\r\n")
    stdin = io.BytesIO(
        spool_frame((root, "fsync", [commit]))
        + spool_frame(("not", "a round"))
        + spool_frame((root, "fsync", [RoundOp("remove", "Q1")]))
    )
    stdout = io.BytesIO()
    spoolchild.serve(stdin, stdout)  # returns at end of input
    first, refused, removed = spool_replies(stdout.getvalue())
    assert first == ("ok", [None])
    assert refused[0] == "error" and "TypeError" in refused[1]
    assert removed == ("ok", [None])
    assert spool_files(tmp_path / "spool", "new") == spool_files(tmp_path / "spool", "env") == []


def test_serve_ends_quietly_when_the_server_is_gone(
    tmp_path: Path, capfd: Any, monkeypatch: Any
) -> None:
    """Regression: a round that ends after the server stopped met a closed pipe; that is a
    quiet end, not a traceback in the server's log."""

    class Gone(io.BytesIO):
        def write(self, data: Any) -> int:
            raise BrokenPipeError(32, "Broken pipe")

    request = spool_frame((str(tmp_path), "fsync", [RoundOp("remove", "Q1")]))

    class TwoBatches(io.BytesIO):
        def readinto(self, buffer: Any) -> int:  # one request per read
            return super().readinto(memoryview(buffer)[: len(request)])

    stdin = TwoBatches(request * 2)
    monkeypatch.setattr(spoolchild, "_more_waiting", lambda stream: False)  # one per batch
    spoolchild.serve(stdin, Gone())  # returns, raises nothing
    assert stdin.tell() == len(request)  # it stopped at the first answer it could not give
    out, err = capfd.readouterr()
    assert (out, err) == ("", "")  # quietly: no traceback, nothing for the log


def test_a_round_error_comes_back_as_the_os_error(tmp_path: Path) -> None:
    """A failed write (here: the spool does not exist) is an OSError with its errno in the
    parent, so the SMTP side can tell 452 (disk full) from 451."""
    commit = RoundOp("commit", "Q1", str(tmp_path / "no" / "tmp" / "Q1.env"), b"{}", b"x")
    stdout = io.BytesIO()
    spoolchild.serve(io.BytesIO(spool_frame((str(tmp_path / "no"), "fsync", [commit]))), stdout)
    ((status, (err,)),) = spool_replies(stdout.getvalue())
    assert status == "ok" and isinstance(err, OSError) and err.errno == 2


def test_a_dead_spool_process_fails_every_waiting_round() -> None:
    """Its outcome is unknown, so the commits fail (the SMTP side answers 451, nothing was
    acknowledged) and the next call starts a new process."""
    proc = SpoolProcess(reactor)
    waiting = [defer.Deferred(), defer.Deferred()]
    proc._waiting.extend(waiting)
    proc._transport = object()
    proc.processEnded(Failure(error.ProcessTerminated(signal=9)))
    assert proc._transport is None
    for d in waiting:
        failure = []
        d.addErrback(failure.append)
        assert failure and failure[0].check(SpoolProcessError)
        assert isinstance(failure[0].value, OSError)


class FakeChild:
    pid = 4242

    def __init__(self) -> None:
        self.signals: list[str] = []
        self.written: list[bytes] = []

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def writeSequence(self, data: list[bytes]) -> None:
        self.written.extend(data)


def test_a_garbled_conversation_kills_the_child() -> None:
    """Regression (review): an answer nobody asked for, an unreadable answer or a closed
    answer pipe used to leave the child alive and every later round waiting for ever; now
    the child is killed, so processEnded fails what waits (451) and the next round starts
    a new one."""
    proc = SpoolProcess(reactor)
    proc._transport = child = FakeChild()
    proc.childDataReceived(1, spool_frame(("ok", [])))  # nobody asked
    assert child.signals == ["KILL"]
    refused: list[Failure] = []
    proc(run_round, "/nonexistent", "fsync", []).addErrback(refused.append)
    assert refused and "being restarted" in str(refused[0].value)  # not sent to it
    assert child.written == []
    proc.processEnded(Failure(error.ProcessTerminated(signal=9)))

    proc._transport = child = FakeChild()  # the next child
    waiting = proc(run_round, "/nonexistent", "fsync", [])
    failures: list[Failure] = []
    waiting.addErrback(failures.append)
    garbage = b"not a pickle"
    proc.childDataReceived(1, rounds.FRAME.pack(len(garbage)) + garbage)
    assert failures and failures[0].check(SpoolProcessError)
    assert child.signals == ["KILL"]
    proc.processEnded(Failure(error.ProcessTerminated(signal=9)))

    proc._transport = child = FakeChild()
    proc.childConnectionLost(1)
    assert child.signals == ["KILL"]


def test_after_a_garbled_answer_no_later_answer_is_believed() -> None:
    """Regression (review): with several requests outstanding, the answers a dying child had
    already written went to the requests after the garbled one: B's failed commit (ENOSPC)
    came back 'ok' to... someone.  Now every outstanding request fails: a 4xx, never a 250
    for a change whose outcome is unknown."""
    proc = SpoolProcess(reactor)
    proc._transport = FakeChild()
    outcomes: dict[str, object] = {}
    for name in "ABC":
        d = proc(run_round, "/nonexistent", "fsync", [])
        d.addCallbacks(
            lambda r, n=name: outcomes.__setitem__(n, ("ok", r)),
            lambda f, n=name: outcomes.__setitem__(n, f.value),
        )
    garbage = b"not a pickle"
    proc.childDataReceived(
        1,
        rounds.FRAME.pack(len(garbage)) + garbage + spool_frame(("ok", [OSError(28, "No space")])),
    )
    proc.childDataReceived(1, spool_frame(("ok", [None])))  # C's: not believed
    proc.processEnded(Failure(error.ProcessTerminated(signal=9)))
    assert set(outcomes) == {"A", "B", "C"}
    assert all(isinstance(v, SpoolProcessError) for v in outcomes.values()), outcomes


def test_only_rounds_are_sent_to_the_spool_process() -> None:
    proc = SpoolProcess(reactor)
    proc._transport = FakeChild()
    failures: list[Failure] = []
    proc(os.unlink, "/etc/passwd").addErrback(failures.append)
    assert failures and failures[0].check(TypeError)
    assert proc._transport.written == []


def test_a_round_with_an_unknown_outcome_is_undone(tmp_path: Path) -> None:
    """Regression (review): when the spool process dies after renaming a commit into place,
    the client gets 451; the files are removed, so the message is not delivered anyway
    after the next restart (and nothing is left in tmp/)."""

    def dies_after_the_round(fn: Any, *args: Any) -> defer.Deferred:
        fn(*args)  # everything got done, but the answer never came
        return defer.fail(SpoolProcessError(0, "spool process ended"))

    spool = Spool(str(tmp_path / "spool"), dies_after_the_round, sync="fsync")
    spool.recover()
    inc = spool.incoming()
    inc.write(b"hello\r\n")
    failures: list[Failure] = []
    spool.commit(inc, one_recipient_envelope(inc.id, 7)).addErrback(failures.append)
    assert failures and failures[0].check(SpoolProcessError)
    for sub in ("new", "env", "tmp"):
        assert spool_files(tmp_path / "spool", sub) == []


class RealProcessTests(TestCase):
    """A real child on the real reactor."""

    def setUp(self) -> None:
        self.proc = SpoolProcess(reactor)
        self.tmp = Path(tempfile.mkdtemp(prefix="mxbackup-spoolproc-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def tearDown(self) -> Any:
        return self.proc.stop()

    def commit(self, spool: Spool, data: bytes) -> tuple[str, defer.Deferred]:
        inc = spool.incoming()
        inc.write(data)
        return inc.id, spool.commit(inc, one_recipient_envelope(inc.id, 7))

    @defer.inlineCallbacks
    def test_commit_through_the_process_and_again_after_it_was_killed(self) -> Any:
        root = self.tmp / "spool"
        spool = Spool(str(root), self.proc)
        spool.recover()
        qid, d = self.commit(spool, b"one\r\n")
        yield d
        assert (root / "new" / qid).read_bytes() == b"one\r\n"
        assert spool_files(root, "env") == [qid]
        ended = self.proc._ended
        os.kill(self.proc._transport.pid, signal.SIGKILL)
        yield ended
        qid2, d2 = self.commit(spool, b"two\r\n")  # a new child takes over
        yield d2
        assert (root / "new" / qid2).read_bytes() == b"two\r\n"

    @defer.inlineCallbacks
    def test_start_spawns_the_child_before_the_first_round(self) -> Any:
        """Regression: the service starts the child when the reactor starts, so the first
        clients do not wait for a Python start-up (110 ms measured) for their 250."""
        self.proc.start()
        assert self.proc._transport is not None
        pid = self.proc._transport.pid
        self.proc.start()  # idempotent
        assert self.proc._transport.pid == pid
        root = self.tmp / "spool"
        spool = Spool(str(root), self.proc)
        spool.recover()
        _, d = self.commit(spool, b"x\r\n")
        yield d
        assert self.proc._transport.pid == pid  # the same child did the round

    @defer.inlineCallbacks
    def test_shutdown_finishes_what_was_sent_then_refuses_quietly(self) -> Any:
        """Regression: at the server's stop the child was killed while a round was in hand
        ("its answers stopped; killing it"), so an outcome being recorded failed with a
        traceback in the log.  Now the rounds sent finish, later ones fail at once with
        SpoolStopping (no new child), and nothing is logged as an error."""
        events: list[dict] = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        root = self.tmp / "spool"
        spool = Spool(str(root), self.proc)
        spool.recover()
        qid, d = self.commit(spool, b"in hand\r\n")
        stopped = self.proc.shutdown()  # while the round is in flight
        yield d
        assert (root / "new" / qid).read_bytes() == b"in hand\r\n"
        yield stopped
        assert self.proc._transport is None
        failures: list[Failure] = []
        self.commit(spool, b"too late\r\n")[1].addErrback(failures.append)
        assert failures and failures[0].check(SpoolStopping)
        assert self.proc._transport is None  # no new child
        assert not [e for e in events if e.get("log_level") in (LogLevel.error, LogLevel.critical)]

    @defer.inlineCallbacks
    def test_a_spilled_message_is_committed_whole(self) -> Any:
        root = self.tmp / "spool"
        spool = Spool(str(root), self.proc, sync="fsync")
        spool.recover()
        body = b"x" * 998 + b"\r\n"
        qid, d = self.commit(spool, body * 400)  # 400 KB: beyond what stays in memory
        yield d
        assert (root / "new" / qid).read_bytes() == body * 400
        assert spool_files(root, "tmp") == []


def test_the_spool_process_dies_with_the_server(tmp_path: Path) -> None:
    """kill -9 of twistd takes the spool process with it (PR_SET_PDEATHSIG): no orphan can
    rename files into a spool that a restarted server has already recovered."""
    config = write_config(tmp_path, base_config(tmp_path))
    server = Twistd(config, tmp_path / "twistd.log").start()
    try:
        with server.smtp() as c:  # one message, so the spool process is surely running
            c.sendmail("s@sender.test", ["u@example.com"], b"Subject: x\r\n\r\nbody\r\n")
        assert server.proc is not None
        (child,) = children_of(server.proc.pid, SPOOLCHILD)
    finally:
        server.kill9()
    assert process_gone(child)


def test_a_killed_spool_process_is_replaced(tmp_path: Path) -> None:
    """The spool process killed on its own: the server goes on, the next message is queued
    through a new one (and nothing queued before is lost)."""
    config = write_config(tmp_path, base_config(tmp_path))
    server = Twistd(config, tmp_path / "twistd.log").start()
    try:
        msg = b"Subject: x\r\n\r\nbody\r\n"
        with server.smtp() as c:
            c.sendmail("s@sender.test", ["u@example.com"], msg)
        assert server.proc is not None
        (child,) = children_of(server.proc.pid, SPOOLCHILD)
        os.kill(child, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while "spool process ended" not in server.logtext():  # the server noticed
            assert time.monotonic() < deadline, server.logtext()
            time.sleep(0.02)  # polling for the server's log line, not waiting for time to pass
        with server.smtp() as c:
            c.sendmail("s@sender.test", ["u@example.com"], msg)
        assert len(spool_files(tmp_path / "spool", "new")) == 2
        (new_child,) = children_of(server.proc.pid, SPOOLCHILD)
        assert new_child != child
    finally:
        server.stop()
