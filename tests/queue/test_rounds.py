"""The spool's rounds (mxbackup.queue.rounds): how many syncs a round makes, and when.

syncfs mode: a round of commits and removals is one syncfs, after its renames; a round with an
envelope update is two (data, then names).  The file syncfs uses is opened before anything is
written, and the checkpoint is set as the round starts.  SYNCFS is replaced by a recorder that
calls the real one (where there is one)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from helpers import one_recipient_envelope, spool_files
from mxbackup.queue import rounds
from mxbackup.queue.rounds import CHECKPOINT, RoundOp, run_round
from mxbackup.queue.spool import Spool


class Recorder:
    """Stands for ``rounds.SYNCFS``: notes what the spool looked like at each call."""

    def __init__(self, root: Path, real: Any) -> None:
        self.root = root
        self.real = real
        self.fds: list[int] = []
        self.seen: list[tuple[list[str], list[str], list[str]]] = []

    def __call__(self, fd: int) -> None:
        assert os.readlink(f"/proc/self/fd/{fd}") == str(self.root)
        self.fds.append(fd)
        self.seen.append(
            (
                spool_files(self.root, "tmp"),
                spool_files(self.root, "new"),
                spool_files(self.root, "env"),
            )
        )
        if self.real is not None:
            self.real(fd)


@pytest.fixture
def root(tmp_path: Path) -> Path:
    spool = Spool(str(tmp_path / "spool"), lambda fn, *a: None)
    spool.open()
    return tmp_path / "spool"


@pytest.fixture
def syncs(root: Path, monkeypatch: pytest.MonkeyPatch) -> Recorder:
    recorder = Recorder(root, rounds.SYNCFS)
    monkeypatch.setattr(rounds, "SYNCFS", recorder)
    return recorder


def commit_op(root: Path, qid: str, message: bytes = b"hello\r\n") -> RoundOp:
    data = one_recipient_envelope(qid, len(message)).to_json()
    return RoundOp("commit", qid, str(root / "tmp" / f"{qid}.env"), data, message)


def update_op(root: Path, qid: str) -> RoundOp:
    data = one_recipient_envelope(qid).to_json()
    return RoundOp("update", qid, str(root / "tmp" / f"{qid}.env.1"), data)


def test_a_round_of_commits_is_one_sync_after_the_renames(root: Path, syncs: Recorder) -> None:
    assert run_round(str(root), "syncfs", [commit_op(root, "A"), commit_op(root, "B")]) == [
        None,
        None,
    ]
    assert syncs.seen == [([], ["A", "B"], ["A", "B"])]
    assert (root / "new" / "A").read_bytes() == b"hello\r\n"


def test_commits_and_removals_share_one_sync(root: Path, syncs: Recorder) -> None:
    run_round(str(root), "syncfs", [commit_op(root, "A")])
    syncs.seen.clear()
    results = run_round(str(root), "syncfs", [commit_op(root, "B"), RoundOp("remove", "A")])
    assert results == [None, None]
    assert syncs.seen == [([], ["B"], ["B"])]


def test_a_round_with_an_update_syncs_data_then_names(root: Path, syncs: Recorder) -> None:
    run_round(str(root), "syncfs", [commit_op(root, "A")])
    syncs.seen.clear()
    results = run_round(str(root), "syncfs", [commit_op(root, "B"), update_op(root, "A")])
    assert results == [None, None]
    assert syncs.seen == [
        (["A.env.1", "B", "B.env"], ["A"], ["A"]),  # data durable while only in tmp/
        ([], ["A", "B"], ["A", "B"]),
    ]


def test_one_file_opened_before_any_write_serves_every_sync(
    root: Path, syncs: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """syncfs reports the write-back errors since its file was opened (errseq): opened before
    the first write, it covers all of the round's."""
    opened: list[tuple[str, int]] = []
    real_open = os.open

    def recording_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        fd = real_open(path, flags, *args, **kwargs)
        opened.append((str(path), fd))
        return fd

    monkeypatch.setattr(os, "open", recording_open)
    run_round(str(root), "syncfs", [commit_op(root, "A")])
    assert opened == [
        (str(root), syncs.fds[0]),  # before the message and its envelope
        (str(root / "tmp" / "A"), opened[1][1]),
        (str(root / "tmp" / "A.env"), opened[2][1]),
    ]
    opened.clear()
    run_round(str(root), "syncfs", [commit_op(root, "B"), update_op(root, "A")])
    assert opened[0][0] == str(root) and syncs.fds[1:] == [opened[0][1]] * 2


def test_the_checkpoint_is_set_before_the_round_writes(
    root: Path, syncs: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    checkpoint = root / CHECKPOINT
    os.utime(checkpoint, (1000.0, 1000.0))
    at_write: list[float] = []
    real = rounds._write_new

    def write_new(path: str, data: bytes, durable: bool) -> None:
        at_write.append(checkpoint.stat().st_mtime)
        real(path, data, durable)

    monkeypatch.setattr(rounds, "_write_new", write_new)
    run_round(str(root), "syncfs", [commit_op(root, "A")])
    assert at_write and all(t > 1000.0 for t in at_write)


def test_without_a_checkpoint_a_round_syncs_twice_and_makes_one(
    root: Path, syncs: Recorder
) -> None:
    (root / CHECKPOINT).unlink()
    run_round(str(root), "syncfs", [commit_op(root, "A")])
    assert syncs.seen == [(["A", "A.env"], [], []), ([], ["A"], ["A"])]
    assert (root / CHECKPOINT).exists()
    syncs.seen.clear()
    run_round(str(root), "syncfs", [commit_op(root, "B")])
    assert len(syncs.seen) == 1


def test_a_failed_sync_takes_the_round_s_commits_back(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(fd: int) -> None:
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(rounds, "SYNCFS", broken)
    results = run_round(str(root), "syncfs", [commit_op(root, "A"), commit_op(root, "B")])
    assert [e.errno for e in results if e is not None] == [5, 5]
    assert spool_files(root, "new") == spool_files(root, "env") == spool_files(root, "tmp") == []


def test_fsync_rounds_do_not_use_syncfs(root: Path, syncs: Recorder) -> None:
    assert run_round(str(root), "fsync", [commit_op(root, "A"), update_op(root, "A")]) == [
        None,
        None,
    ]
    assert syncs.seen == []
