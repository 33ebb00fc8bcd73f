"""The prefetch process seen from the server: hints only (a batch sent and forgotten, at
most a few unanswered, a dead child started again later and counted), started at the first
use, ended by the stop."""

from __future__ import annotations

import os
import pickle
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer, error, reactor, task
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from mxbackup.queue import prefetch
from mxbackup.queue.prefetchchild import COLD, FAILED, WARM
from mxbackup.queue.prefetchproc import RESTART_AFTER, STUCK_AFTER, Prefetcher
from mxbackup.queue.rounds import FRAME


class FakeChild:
    pid = 4242

    def __init__(self) -> None:
        self.frames: list[list[tuple[str, int]]] = []
        self.stdin_closed = False
        self.signals: list[str] = []
        self.broken = False

    def signalProcess(self, name: str) -> None:
        self.signals.append(name)

    def writeSequence(self, data: list[bytes]) -> None:
        if self.broken:
            raise ValueError("a transport that broke")
        head, body = data
        assert FRAME.unpack(head) == (len(body),)
        self.frames.append(pickle.loads(body))

    def closeStdin(self) -> None:
        self.stdin_closed = True


class FakeReactor(task.Clock):
    def __init__(self) -> None:
        super().__init__()
        self.children: list[FakeChild] = []
        self.fail: Exception | None = None

    def spawnProcess(self, proto: Any, executable: str, args: list[str], **kw: Any) -> Any:
        if self.fail is not None:
            raise self.fail
        self.children.append(FakeChild())
        return self.children[-1]


@pytest.fixture(autouse=True)
def with_fadvise(monkeypatch: Any) -> None:
    monkeypatch.setattr(prefetch, "_WILLNEED", 3)  # as on Linux, wherever the tests run


def test_nothing_is_started_before_the_first_use_and_batches_go_in_order() -> None:
    r = FakeReactor()
    p = Prefetcher(r)
    assert r.children == [] and not p.started
    p([("/q/new/A", 5), ("/q/new/B", 7)])
    p([("/q/new/C", 9)])
    (child,) = r.children
    assert child.frames == [[("/q/new/A", 5), ("/q/new/B", 7)], [("/q/new/C", 9)]]
    assert p.started and p.unanswered == 2


def test_start_starts_the_child_once_and_not_after_the_stop() -> None:
    r = FakeReactor()
    p = Prefetcher(r)
    p.start()
    p.start()
    assert len(r.children) == 1 and p.started
    p([("/m", 1)])
    assert r.children[0].frames == [[("/m", 1)]]
    stopped = Prefetcher(r)
    stopped.stop()
    stopped.start()
    assert len(r.children) == 1


def test_at_most_ahead_batches_are_unanswered_then_batches_are_left_to_the_send() -> None:
    r = FakeReactor()
    p = Prefetcher(r, ahead=2)
    for i in range(4):
        p([(f"/m{i}", 1)])
    (child,) = r.children
    assert [f[0][0] for f in child.frames] == ["/m0", "/m1"]  # the child is behind
    p.childDataReceived(1, COLD)
    p([("/m4", 1)])
    assert [f[0][0] for f in child.frames] == ["/m0", "/m1", "/m4"]


def test_while_batches_find_everything_cached_only_one_in_sample_is_sent() -> None:
    r = FakeReactor()
    p = Prefetcher(r)
    p([("/m", 1)])
    (child,) = r.children
    p.childDataReceived(1, WARM)  # all cached
    assert not p.cold
    for _ in range(prefetch.SAMPLE - 1):
        p([("/m", 1)])
    assert len(child.frames) == 1  # skipped
    p([("/m", 1)])
    assert len(child.frames) == 2  # the sample
    p.childDataReceived(1, COLD)  # it found cold files: every batch again
    p([("/m", 1)])
    p([("/m", 1)])
    assert len(child.frames) == 4 and p.cold


def test_a_failed_batch_is_counted_and_taken_for_cold() -> None:
    r = FakeReactor()
    p = Prefetcher(r)
    p([("/m", 1)])
    p.childDataReceived(1, WARM)
    p([("/m", 1)])  # skipped (cached): not sent
    p.childDataReceived(1, FAILED)
    assert p.failures == 1 and p.cold and p.unanswered == 0


def test_a_dead_child_is_counted_logged_and_started_again_later() -> None:
    r = FakeReactor()
    p = Prefetcher(r)
    p([("/m", 1)])
    p.processEnded(Failure(error.ProcessTerminated(signal=9)))
    assert p.failures == 1 and p.unanswered == 0
    p([("/m", 1)])
    assert len(r.children) == 1  # not at once
    r.advance(RESTART_AFTER)
    p([("/m", 1)])
    assert len(r.children) == 2 and r.children[1].frames == [[("/m", 1)]]


@pytest.mark.parametrize(
    "failure", [OSError(11, "Resource temporarily unavailable"), NotImplementedError("no")]
)
def test_a_child_that_cannot_start_is_counted_and_tried_later(failure: Exception) -> None:
    """Whatever the spawn raises, the delivery never hears of it (hints only)."""
    r = FakeReactor()
    r.fail = failure
    p = Prefetcher(r)
    p([("/m", 1)])
    p.start()
    assert p.failures == 1 and not p.started
    r.fail = None
    p([("/m", 1)])
    assert r.children == []
    r.advance(RESTART_AFTER)
    p([("/m", 1)])
    assert len(r.children) == 1


def test_a_batch_that_cannot_be_handed_over_is_counted_not_raised() -> None:
    r = FakeReactor()
    p = Prefetcher(r)
    p.start()
    r.children[0].broken = True
    p([("/m", 1)])  # raises nothing
    assert p.failures == 1 and p.unanswered == 0


def test_a_child_that_stops_answering_is_killed_counted_and_started_again() -> None:
    """Review: a hung child (a stuck disk) kept ``ahead`` batches unanswered, and warming
    was off for good, silently."""
    r = FakeReactor()
    p = Prefetcher(r, ahead=2)
    p([("/m0", 1)])
    p([("/m1", 1)])
    (child,) = r.children
    r.advance(STUCK_AFTER / 2)
    p([("/m2", 1)])  # behind, not for long yet: not sent
    assert child.signals == [] and p.failures == 0
    r.advance(STUCK_AFTER)
    p([("/m3", 1)])
    assert child.signals == ["KILL"] and p.failures == 1
    p.processEnded(Failure(error.ProcessTerminated(signal=9)))
    assert p.failures == 1 and p.unanswered == 0  # counted once
    r.advance(RESTART_AFTER)
    p([("/m4", 1)])
    assert len(r.children) == 2 and r.children[1].frames == [[("/m4", 1)]]


def test_the_stop_closes_its_input_and_nothing_more_is_sent() -> None:
    r = FakeReactor()
    p = Prefetcher(r)
    p([("/m", 1)])
    p.stop()
    (child,) = r.children
    assert child.stdin_closed
    p.processEnded(Failure(error.ProcessDone(0)))
    p([("/m", 2)])
    assert len(r.children) == 1 and p.failures == 0  # the end it asked for: no failure


def test_without_posix_fadvise_no_process_is_started(monkeypatch: Any) -> None:
    monkeypatch.setattr(prefetch, "_WILLNEED", None)
    r = FakeReactor()
    Prefetcher(r)([("/m", 1)])
    assert r.children == []


class RealProcessTests(TestCase):
    """A real child on the real reactor."""

    def setUp(self) -> None:
        self.tmp = Path(tempfile.mkdtemp(prefix="mxbackup-prefetch-"))
        self.addCleanup(shutil.rmtree, self.tmp, True)

    @defer.inlineCallbacks
    def test_a_batch_is_answered_and_the_stop_ends_the_child(self) -> Any:
        if prefetch._WILLNEED is None:
            self.skipTest("no posix_fadvise on this system")
        answered: defer.Deferred = defer.Deferred()
        ended: defer.Deferred = defer.Deferred()

        class Watched(Prefetcher):
            def childDataReceived(self, childFD: int, data: bytes) -> None:
                super().childDataReceived(childFD, data)
                answered.callback(data)

            def processEnded(self, reason: Failure) -> None:
                super().processEnded(reason)
                ended.callback(reason.value)

        p = Watched(reactor)
        files = []
        for i in range(3):
            f = self.tmp / f"m{i}"
            f.write_bytes(b"m" * 4096)
            files.append((str(f), 4096))
        p(files)
        assert p.unanswered == 1
        assert (yield answered) in (COLD, WARM)
        assert p.unanswered == 0 and p.failures == 0
        p.stop()
        assert isinstance((yield ended), error.ProcessDone)
        assert p.failures == 0
        assert [Path(f).read_bytes() for f, _ in files] == [b"m" * 4096] * 3
        assert os.path.exists(files[0][0])
