"""A big queue read while the server accepts mail (mxbackup.queue.background): chunks filed
in order, one per turn of the reactor, by worker processes or a thread; a broken pool, a
stop and a failure in the middle."""

from __future__ import annotations

import os
import queue as thread_queue
import time
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from helpers import committed, spool_files, sync_thread
from mxbackup.queue import background, checkpoint, recovery
from mxbackup.queue.background import BackgroundLoad
from mxbackup.queue.recovery import Chunk
from mxbackup.queue.recoverysteps import Recovery
from mxbackup.queue.spool import Spool


class SyncPool:
    """The reactor's thread pool, running each call at once (``deferToThreadPool``)."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def callInThreadWithCallback(
        self, on_result: Callable, fn: Callable, *args: Any, **kwargs: Any
    ) -> None:
        self.calls.append(fn.__name__)
        try:
            result = fn(*args, **kwargs)
        except Exception:
            on_result(False, Failure())
        else:
            on_result(True, result)


class Reactor(Clock):
    """A Clock with ``callFromThread`` (calls kept until ``pump`` runs them) and a pool."""

    def __init__(self) -> None:
        super().__init__()
        self.from_threads: thread_queue.Queue = thread_queue.Queue()
        self.pool = SyncPool()

    def callFromThread(self, fn: Callable, *args: Any) -> None:
        self.from_threads.put((fn, args))

    def getThreadPool(self) -> SyncPool:
        return self.pool

    def pump(self, until: Callable[[], bool], limit: float = 60.0) -> None:
        """Run the turns until ``until()``: waits on the worker processes' results (real
        processes), never for time to pass."""
        deadline = time.monotonic() + limit
        while not until():
            self.advance(0)
            try:
                fn, args = self.from_threads.get(timeout=0.05)
            except thread_queue.Empty:
                assert time.monotonic() < deadline, "the load did not progress"
                continue
            fn(*args)


class Load:
    def __init__(self, root: Path, workers: int = 0) -> None:
        self.reactor = Reactor()
        self.recovery: Recovery = Spool(str(root), sync_thread).begin_recovery()
        self.recovery.pin()
        self.filed: list[Chunk] = []
        self.done = 0
        self.trims = 0
        self.service = BackgroundLoad(
            self.reactor, self.recovery, self.filed.append, self._done, workers, trim=self._trim
        )

    def _trim(self) -> None:
        self.trims += 1

    def _done(self) -> None:
        self.done += 1

    def ids(self) -> list[str]:
        return [qid for chunk in self.filed for qid in chunk.qids]


@pytest.fixture
def small_chunks(monkeypatch) -> None:
    monkeypatch.setattr(background, "CHUNK", 2)


def test_a_thread_files_every_chunk_in_order_one_per_turn(tmp_path: Path, small_chunks) -> None:
    root = tmp_path / "spool"
    ids = committed(root, 5)
    (root / "env" / ids[3]).write_bytes(b"{unreadable")
    load = Load(root)
    load.service.startService()
    assert load.service.progress() == {"loaded": 0, "of": 5, "failed": None, "retrying": False}
    load.reactor.pump(lambda: len(load.filed) == 1)
    assert load.ids() == ids[:2] and load.done == 0
    load.reactor.pump(lambda: load.service.finished)
    assert load.done == 1 and len(load.filed) == 3 and load.ids() == ids[:3] + ids[4:]
    assert spool_files(root, "corrupt") == sorted([ids[3], ids[3] + ".env"])
    assert load.service.finished and load.service.progress() is None
    assert load.service.loaded == 5
    assert not (root / checkpoint.PIN).exists()  # finished: the pin is lifted
    # the chunks and the last step's file work (a syncfs may wait on the disk) in a thread
    assert load.reactor.pool.calls == ["read_chunk"] * 3 + ["settle"]


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: a thread reads")
def test_worker_processes_give_the_same_chunks(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(background, "CHUNK", 1)
    root = tmp_path / "spool"
    ids = committed(root, 7)
    load = Load(root, workers=2)
    names = list(load.recovery.names)
    load.service.startService()  # (the first chunk is awaited at once)
    ahead = background.AHEAD_PER_READER * 2
    given = [f is not None for f in load.service._futures]
    assert given == [False] + [True] * ahead + [False] * (6 - ahead)  # only so many ahead
    load.reactor.pump(lambda: load.service.finished)
    assert load.ids() == ids and len(load.filed) == 7
    assert all(a is b for a, b in zip(load.ids(), names, strict=True))  # not the copies
    assert load.reactor.pool.calls == ["settle"]  # every chunk read by the processes
    assert load.recovery.names == []  # handed over to the queue
    assert not (root / checkpoint.PIN).exists()


class BrokenPool:
    def shutdown(self, wait: bool = True, cancel_futures: bool = False) -> None:
        self.shut = True


def test_a_broken_pool_leaves_the_rest_to_a_thread(
    tmp_path: Path, small_chunks, monkeypatch
) -> None:
    def broken(*args: Any) -> Future:
        future: Future = Future()
        future.set_exception(BrokenProcessPool("a worker was killed"))
        return future

    monkeypatch.setattr(background, "background_pool", lambda workers: BrokenPool())
    monkeypatch.setattr(background, "submit", broken)
    root = tmp_path / "spool"
    ids = committed(root, 5)
    load = Load(root, workers=2)
    load.service.startService()
    load.reactor.pump(lambda: load.done == 1)
    assert load.ids() == ids


def test_a_stop_in_the_middle_leaves_the_rest_and_the_pin(tmp_path: Path, small_chunks) -> None:
    root = tmp_path / "spool"
    committed(root, 5)
    load = Load(root)
    load.service.startService()
    load.reactor.pump(lambda: len(load.filed) == 1)
    load.service.stopService()
    for _ in range(5):
        load.reactor.advance(0)
    assert len(load.filed) == 1 and load.done == 0
    assert (root / checkpoint.PIN).exists()  # the next start checks from the same window
    assert load.service.progress() == {"loaded": 2, "of": 5, "failed": None, "retrying": False}


def test_a_failed_read_is_tried_again_a_minute_later(tmp_path: Path, small_chunks, monkeypatch):
    calls: list[int] = []

    def failing_once(*args: Any, **kwargs: Any) -> Chunk:
        calls.append(1)
        if len(calls) == 1:
            raise OSError(5, "Input/output error")
        return recovery.read_chunk(*args, **kwargs)

    root = tmp_path / "spool"
    ids = committed(root, 3)
    load = Load(root)
    monkeypatch.setattr(background, "read_chunk", failing_once)
    load.service.startService()
    load.reactor.pump(lambda: load.service.failed is not None)
    assert load.done == 0 and load.filed == []
    failed = "[Errno 5] Input/output error"
    assert load.service.progress() == {"loaded": 0, "of": 3, "failed": failed, "retrying": True}
    assert (root / checkpoint.PIN).exists()
    load.reactor.advance(background.RETRY_AFTER)
    load.reactor.pump(lambda: load.service.finished)
    assert load.ids() == ids and load.done == 1 and load.service.failed is None


def test_a_chunk_that_cannot_be_filed_is_never_filed_again(tmp_path: Path, small_chunks):
    """Review: a failure while filing (part of the chunk may be in the queue, even in flight
    by then) was taken for the readers' and the chunk read and filed again."""
    root = tmp_path / "spool"
    committed(root, 5)
    reactor = Reactor()
    recovery_ = Spool(str(root), sync_thread).begin_recovery()
    filed: list[Chunk] = []
    gave_up: list[bool] = []

    def file(chunk: Chunk) -> None:
        filed.append(chunk)
        if len(filed) == 2:
            raise RuntimeError("a bug while filing")

    service = BackgroundLoad(
        reactor, recovery_, file, lambda: None, 0, gave_up=lambda: gave_up.append(True)
    )
    service.startService()
    reactor.pump(lambda: bool(gave_up))
    for _ in range(5):
        reactor.advance(0)
    assert len(filed) == 2 and service.failed == "a bug while filing"
    assert not service.finished


def test_the_c_heap_is_trimmed_as_the_load_goes(tmp_path: Path, small_chunks, monkeypatch):
    """What filing frees stayed resident in the C heap until the load's end: a million's
    load peaked 33-37 MB above what it left (VmHWM 492.5-495.3 MB against 458-461)."""
    monkeypatch.setattr(background, "TRIM_EVERY", 2)
    committed(root := tmp_path / "spool", 9)  # 5 chunks of 2
    load = Load(root)
    load.service.startService()
    load.reactor.pump(lambda: load.done == 1)
    assert load.trims == 2
