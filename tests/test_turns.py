"""Work done a slice per turn of the reactor (``mxbackup.turns``), on a Clock."""

from __future__ import annotations

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from mxbackup.turns import at_once, in_turns


def work(done: list[int], slices: int, fail: bool = False):
    for i in range(slices):
        if i:
            yield
        done.append(i)
    if fail:
        raise ValueError("bad selector")
    return sum(done)


def test_the_first_slice_at_once_the_others_one_per_turn():
    clock, done = Clock(), []
    d = in_turns(clock, work(done, 3))
    assert done == [0] and not d.called
    clock.advance(0)  # runs every slice due now (a real reactor: one per turn)
    assert done == [0, 1, 2] and d.result == 3


def test_one_slice_fires_at_once_and_a_failure_errbacks():
    clock = Clock()
    assert in_turns(clock, work([], 1)).result == 0
    failed = in_turns(clock, work([], 2, fail=True))
    clock.advance(0)
    assert failed.called
    with pytest.raises(ValueError, match="bad selector"):
        failed.result.raiseException()
    failed.addErrback(lambda _: None)


def test_at_once_runs_every_slice_now():
    assert at_once(work([], 4)) == 6


def test_cancelled_no_further_slice_runs_and_the_work_is_closed():
    """Its client went away (a listing of a million): the rest of the work is not done."""
    clock, done, closed = Clock(), [], []

    def steps():
        try:
            return (yield from work(done, 5))
        finally:
            closed.append(True)

    d = in_turns(clock, steps())
    assert done == [0]
    d.cancel()
    clock.advance(0)
    assert done == [0] and closed == [True] and not clock.getDelayedCalls()
    failures: list = []
    d.addErrback(failures.append)
    assert failures[0].check(defer.CancelledError)
