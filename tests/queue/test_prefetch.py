"""Warming the page cache for a connection's messages: hints only, in order, cached files
skipped (the process that does it: ``test_prefetchproc``, ``test_prefetchchild``)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from mxbackup.queue import prefetch
from mxbackup.queue.prefetch import AHEAD, warm

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
    assert warm([(str(tmp_path / "m"), 1)]) == 0
    assert opened == []


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
