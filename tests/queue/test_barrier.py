"""The durability barrier: any number of waiters, fired or failed once the writes did."""

from __future__ import annotations

import gc

from twisted.internet import defer
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

from mxbackup.queue.barrier import Barrier


def results(d: defer.Deferred) -> list:
    out: list = []
    d.addBoth(out.append)
    return out


def test_waiters_before_and_after_the_writes_all_fire():
    writes: defer.Deferred = defer.Deferred()
    barrier = Barrier(writes)
    early = [results(barrier.wait()) for _ in range(3)]
    assert early == [[], [], []] and not barrier.settled
    writes.callback("anything")
    assert early == [[None]] * 3 and barrier.settled
    assert results(barrier.wait()) == [None]


def test_a_failure_reaches_every_waiter_early_or_late():
    writes: defer.Deferred = defer.Deferred()
    barrier = Barrier(writes)
    early = results(barrier.wait())
    writes.errback(OSError(28, "No space left on device"))
    late = results(barrier.wait())
    for got in (early, late):
        (failure,) = got
        assert isinstance(failure, Failure) and failure.check(OSError)
        assert "No space left" in failure.getErrorMessage()


def test_a_failure_nobody_waits_for_is_not_an_unhandled_error():
    seen: list = []
    globalLogPublisher.addObserver(seen.append)
    try:
        Barrier(defer.fail(OSError(5, "Input/output error")))
        gc.collect()
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert not [e for e in seen if e.get("isError") or "log_failure" in e]
