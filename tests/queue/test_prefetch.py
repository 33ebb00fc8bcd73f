"""Warming the page cache for a connection's messages: hints only, in order, in the
background, no thread before the first use, nothing after the stop."""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from mxbackup.queue import prefetch
from mxbackup.queue.prefetch import AHEAD, Prefetcher, warm

needs_fadvise = pytest.mark.skipif(
    not hasattr(os, "posix_fadvise"), reason="no posix_fadvise on this system"
)


def advised(monkeypatch: Any) -> list[tuple[int, int, int]]:
    calls: list[tuple[int, int, int]] = []
    real = os.posix_fadvise

    def recording(fd: int, offset: int, length: int, advice: int) -> None:
        calls.append((os.fstat(fd).st_size, offset, length))
        real(fd, offset, length, advice)

    monkeypatch.setattr(os, "posix_fadvise", recording)
    return calls


@needs_fadvise
def test_each_file_is_announced_in_order_and_a_missing_one_is_skipped(tmp_path: Path, monkeypatch):
    calls = advised(monkeypatch)
    monkeypatch.setattr(prefetch, "cached", lambda fd, probe: False)  # as if cold
    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"x" * 10)
    big.write_bytes(b"y" * (AHEAD + 1))
    files = [(str(small), 10), (str(tmp_path / "gone"), 5), (str(big), AHEAD + 1)]
    assert warm(files) == 2
    # a small file whole (length 0: to its end), a large one only its first AHEAD octets
    assert calls == [(10, 0, 0), (AHEAD + 1, 0, AHEAD)]
    assert small.read_bytes() == b"x" * 10  # read only: nothing changed


def test_without_posix_fadvise_nothing_is_done(tmp_path: Path, monkeypatch):
    monkeypatch.setattr(prefetch, "_WILLNEED", None)
    opened: list[str] = []
    monkeypatch.setattr(os, "open", lambda *a, **k: opened.append(a[0]))
    p = Prefetcher()
    p([(str(tmp_path / "m"), 1)])
    assert warm([(str(tmp_path / "m"), 1)]) == 0
    assert opened == [] and not p.started


@needs_fadvise
def test_no_thread_until_the_first_use_then_the_work_runs_in_the_background(tmp_path: Path):
    """Start-up's readers fork only while the server has no other thread: the pool must not
    start threads before the first connection asks for warming."""
    before = threading.active_count()
    p = Prefetcher(threads=1)
    assert threading.active_count() == before
    done = threading.Event()
    f = tmp_path / "m"
    f.write_bytes(b"m")
    real_warm = prefetch.warm

    def warm_and_tell(files: list[tuple[str, int]], stopped: Any) -> int:
        try:
            return real_warm(files, stopped)
        finally:
            done.set()

    prefetch.warm = warm_and_tell  # (restored below: the pool looks it up when submitted)
    try:
        p([(str(f), 1)])
        assert done.wait(10)
    finally:
        prefetch.warm = real_warm
        p.stop()


def test_after_the_stop_nothing_more_is_warmed(tmp_path: Path, monkeypatch):
    p = Prefetcher(threads=1)
    p.stop()
    p([(str(tmp_path / "m"), 1)])  # ignored, no error, no thread
    assert not p.started


@needs_fadvise
def test_cached_files_are_skipped_and_a_run_of_them_ends_the_batch(tmp_path: Path, monkeypatch):
    """The usual case (the page cache holds the queue): warming is wasted work, so a cached
    file is not announced, and a batch stops after QUICK cached files in a row; a cold one
    starts the count again."""
    calls = advised(monkeypatch)
    paths = []
    for i in range(prefetch.QUICK * 3):
        f = tmp_path / f"m{i}"
        f.write_bytes(b"m")
        paths.append((str(f), 1))
    looked: list[int] = []

    def cached(fd: int, probe: bytearray) -> bool:
        looked.append(fd)
        return len(looked) != 2  # only the second file is cold

    monkeypatch.setattr(prefetch, "cached", cached)
    assert warm(paths) == 1 and len(calls) == 1
    assert len(looked) == 1 + 1 + prefetch.QUICK  # stopped after QUICK cached in a row


@needs_fadvise
def test_a_file_just_written_is_found_cached_and_one_dropped_from_the_cache_is_not(
    tmp_path: Path,
) -> None:
    f = tmp_path / "m"
    f.write_bytes(b"m" * 8192)
    fd = os.open(f, os.O_RDONLY)
    try:
        probe = bytearray(1)
        if prefetch._NOWAIT is None:
            assert not prefetch.cached(fd, probe)  # cannot tell: announced
            return
        assert prefetch.cached(fd, probe)
        os.fsync(fd)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # out of the page cache
        if prefetch.cached(fd, probe):
            pytest.skip("this file system keeps its pages (tmpfs)")
    finally:
        os.close(fd)


def test_while_batches_find_everything_cached_only_one_in_sample_is_looked_at(monkeypatch):
    p = Prefetcher(threads=1)
    taken: list[list[tuple[str, int]]] = []
    outcomes = iter([0] * 3 + [5, 0])  # three batches found cached, then a cold one, then not

    def fake_warm(files: list[tuple[str, int]], stopped: Any = None) -> int:
        taken.append(files)
        return next(outcomes)

    class Inline:  # the pool, run at once in this thread
        def submit(self, fn: Any, *args: Any) -> None:
            fn(*args)

    monkeypatch.setattr(prefetch, "warm", fake_warm)
    monkeypatch.setattr(prefetch, "_WILLNEED", 3)
    p._pool = Inline()  # type: ignore[assignment]
    batch = [("m", 1)]
    p(batch)  # cold at first: looked at, found cached
    assert len(taken) == 1 and not p.cold
    for _ in range(prefetch.SAMPLE - 1):
        p(batch)  # skipped
    assert len(taken) == 1
    p(batch)  # the sample: looked at, cached again
    assert len(taken) == 2
    for _ in range(prefetch.SAMPLE):
        p(batch)
    assert len(taken) == 3  # one sample more, cached
    for _ in range(prefetch.SAMPLE):
        p(batch)
    assert len(taken) == 4 and p.cold  # this sample found cold files: every batch again
    p(batch)
    assert len(taken) == 5 and not p.cold


@needs_fadvise
def test_a_batch_ends_at_once_when_the_server_stops(tmp_path: Path, monkeypatch):
    """The interpreter's exit waits for these threads: a batch of cold files must not hold a
    stopping server (review: 150 slow opens held the exit for 3 s)."""
    monkeypatch.setattr(prefetch, "cached", lambda fd, probe: False)
    files = []
    for i in range(5):
        f = tmp_path / f"m{i}"
        f.write_bytes(b"m")
        files.append((str(f), 1))
    flags = iter([False, False, True])
    assert warm(files, lambda: next(flags)) == 2


def test_an_unexpected_error_is_counted_and_never_raised(monkeypatch):
    def broken(files: Any, stopped: Any) -> int:
        raise ValueError("a bug")

    monkeypatch.setattr(prefetch, "warm", broken)
    p = Prefetcher(threads=1)
    p.cold = False
    p._warm([("m", 1)])
    assert p.failures == 1 and p.cold
