"""Giving the C heap's free pages back (``mxbackup.heap``) and the service that does it."""

from __future__ import annotations

import ctypes
import gc
import signal
from pathlib import Path
from types import SimpleNamespace

import pytest
from twisted.internet.task import Clock

from mxbackup import heap
from mxbackup.service import MXBackupService


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_without_malloc_trim_nothing_is_done(monkeypatch) -> None:
    monkeypatch.setattr(heap, "_TRIM", None)
    assert heap.give_back() is False


def test_it_asks_for_every_free_page(monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(heap, "_TRIM", lambda pad: calls.append(pad) or 1)
    assert heap.give_back() is True
    assert calls == [0]  # no padding kept at the heap's top


@pytest.mark.skipif(heap._TRIM is None, reason="not glibc: no malloc_trim")
def test_free_memory_inside_the_heap_leaves_the_resident_size() -> None:
    """What the trim is for: memory freed below something still in use (here every tenth
    of 2 KB blocks, as a start-up leaves its queue among the lists it freed) stays resident
    until it is trimmed."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    libc.memset.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_size_t]
    blocks = [libc.malloc(2048) for _ in range(20_000)]  # 40 MB below the mmap threshold
    for block in blocks:
        libc.memset(block, 1, 2048)  # resident
    kept = blocks[::10]
    for i, block in enumerate(blocks):
        if i % 10:
            libc.free(block)
    try:
        before = _rss_kb()
        assert heap.give_back() is True
        assert before - _rss_kb() > 10_000  # KB: most of the 36 MB freed
    finally:
        for block in kept:
            libc.free(block)


class _Scheduler:
    queue: list[str] = []
    recorder = SimpleNamespace(left_to_snapshot=0)

    def start(self) -> None:
        pass

    def stop(self, for_snapshot: bool = False) -> None:
        pass


def test_the_service_trims_at_start_then_every_minute(monkeypatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(heap, "_TRIM", lambda pad: calls.append(pad) or 0)
    clock = Clock()
    config = SimpleNamespace(routes=[], source="mx.yaml")
    spool = SimpleNamespace(root="spool", from_snapshot=False)
    top = MXBackupService(config, spool, None, _Scheduler(), None, reactor=clock)  # type: ignore[arg-type]
    old_hup = signal.getsignal(signal.SIGHUP)
    try:
        top.startService()
        assert calls == [0]  # at start-up, once the queue is loaded
        clock.advance(heap.EVERY)
        assert calls == [0, 0]
        top.stopService()
        clock.advance(heap.EVERY * 3)
        assert calls == [0, 0]
    finally:
        gc.unfreeze()
        signal.signal(signal.SIGHUP, old_hup)
