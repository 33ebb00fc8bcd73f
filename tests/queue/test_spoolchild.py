"""The spool process's program: requests that wait together run as one round; its pipes
hold a whole round."""

from __future__ import annotations

import fcntl
import io
import os
from pathlib import Path
from typing import Any

import pytest

from helpers import one_recipient_envelope, spool_files, spool_frame, spool_replies
from mxbackup.queue import rounds, spoolchild
from mxbackup.queue.rounds import RoundOp
from mxbackup.queue.spool import Spool


@pytest.fixture
def spool(tmp_path: Path) -> Spool:
    from twisted.internet import defer

    s = Spool(str(tmp_path / "spool"), lambda fn, *a: defer.succeed(None), sync="fsync")
    s.open()
    return s


def commit(spool: Spool, qid: str) -> RoundOp:
    data = one_recipient_envelope(qid, 7).to_json()
    return RoundOp("commit", qid, spool.path("tmp", qid + ".env"), data, b"hi\r\n")


class Trickle(io.BytesIO):
    """A pipe that gives at most ``step`` octets per read, and says whether more waits."""

    def __init__(self, data: bytes, step: int) -> None:
        super().__init__(data)
        self.step = step

    def readinto(self, buffer: Any) -> int:
        return super().readinto(memoryview(buffer)[: self.step])


def test_requests_waiting_together_run_as_one_round(spool: Spool, monkeypatch) -> None:
    calls: list[int] = []
    real = spoolchild.run_round

    def counting(*args: Any) -> Any:
        calls.append(len(args[2]) if len(args) == 3 else -1)
        return real(*args)

    monkeypatch.setattr(spoolchild, "run_round", counting)
    stdin = io.BytesIO(
        spool_frame((spool.root, spool.sync, [commit(spool, "Q1")]))
        + spool_frame((spool.root, spool.sync, [commit(spool, "Q2"), commit(spool, "Q3")]))
        + spool_frame(("not", "a round"))
        + spool_frame((spool.root, spool.sync, [RoundOp("remove", "Q1")]))
    )
    stdout = io.BytesIO()
    spoolchild.serve(stdin, stdout)
    one, two, refused, removed = spool_replies(stdout.getvalue())
    assert one == ("ok", [None]) and two == ("ok", [None, None])  # each its own share
    assert refused[0] == "error" and "TypeError" in refused[1]
    assert removed == ("ok", [None])
    assert calls == [3, -1, 1]  # Q1-Q3 in one round; the bad one alone; then the removal
    assert spool_files(Path(spool.root), "new") == ["Q2", "Q3"]


def test_a_frame_split_over_reads_is_read_whole_and_a_cut_one_is_dropped(spool: Spool) -> None:
    request = spool_frame((spool.root, spool.sync, [commit(spool, "Q1")]))
    stdout = io.BytesIO()
    spoolchild.serve(Trickle(request + request[:7], 3), stdout)  # then the server died
    assert spool_replies(stdout.getvalue()) == [("ok", [None])]


def test_an_unreadable_frame_is_answered_alone(spool: Spool) -> None:
    body = b"\x80\x05garbage"
    stdout = io.BytesIO()
    empty_round = spool_frame((spool.root, spool.sync, []))
    stdin = io.BytesIO(rounds.FRAME.pack(len(body)) + body + empty_round)
    spoolchild.serve(stdin, stdout)
    bad, empty = spool_replies(stdout.getvalue())
    assert bad[0] == "error" and empty == ("ok", [])


def test_a_failing_round_fails_every_request_it_gathered(spool: Spool, monkeypatch) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("disk on fire")

    monkeypatch.setattr(spoolchild, "run_round", broken)
    request = spool_frame((spool.root, spool.sync, [RoundOp("remove", "Q1")]))
    stdout = io.BytesIO()
    spoolchild.serve(io.BytesIO(request * 2), stdout)
    assert spool_replies(stdout.getvalue()) == [("error", "RuntimeError: disk on fire")] * 2


def test_only_what_already_waits_joins_a_round() -> None:
    r, w = os.pipe()
    try:
        with open(r, "rb", buffering=0, closefd=False) as reader:
            assert not spoolchild._more_waiting(reader)
            os.write(w, b"x")
            assert spoolchild._more_waiting(reader)
    finally:
        os.close(r)
        os.close(w)
    assert spoolchild._more_waiting(io.BytesIO(b""))  # in memory: everything is there


@pytest.mark.skipif(not hasattr(fcntl, "F_GETPIPE_SZ"), reason="Linux pipes only")
def test_the_spool_process_s_pipes_hold_a_whole_round() -> None:
    """A round's request (50 commits of 5 KB) goes through the pipe in one write, not a
    pipe-full (64 KB) per turn of the server's reactor."""
    r, w = os.pipe()
    try:
        size = spoolchild.widen_pipe(r)
        assert size == fcntl.fcntl(w, fcntl.F_GETPIPE_SZ)  # one buffer, both ends
        with open("/proc/sys/fs/pipe-max-size") as f:
            assert size == min(spoolchild.PIPE_SIZE, int(f.read()))
    finally:
        os.close(r)
        os.close(w)
    with open(os.devnull, "rb") as not_a_pipe:
        assert spoolchild.widen_pipe(not_a_pipe.fileno()) == 0


def test_requests_already_in_the_pipe_join_one_round_and_no_more(spool: Spool, monkeypatch) -> None:
    """Through a real pipe: what waits in it when a round starts is that round, at most
    ``MAX_BATCH`` requests."""
    sizes: list[int] = []
    real = spoolchild.run_round
    monkeypatch.setattr(spoolchild, "run_round", lambda *a: sizes.append(len(a[2])) or real(*a))
    monkeypatch.setattr(spoolchild, "MAX_BATCH", 3)
    r, w = os.pipe()
    try:
        request = spool_frame((spool.root, spool.sync, [RoundOp("remove", "Q1")]))
        os.write(w, request * 5)
        os.close(w)
        w = -1
        stdout = io.BytesIO()
        with open(r, "rb", buffering=0, closefd=False) as stdin:
            spoolchild.serve(stdin, stdout)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)
    assert len(spool_replies(stdout.getvalue())) == 5
    assert sizes == [3, 2]  # 5 waiting: 3 (the cap), then the other 2
