"""A connection's results recorded in batches while it goes on, the rest at its end."""

from __future__ import annotations

import contextlib
from types import SimpleNamespace

from twisted.internet import defer

from mxbackup.outbound.batches import APPLY_EVERY, Batches
from mxbackup.wire.contract import Delivery, Job, JobResult, Outcome


class FakeSpool:
    def __init__(self, recorded: list) -> None:
        self.recorded = recorded

    @contextlib.contextmanager
    def together(self):
        self.recorded.append("(")
        yield
        self.recorded.append(")")


class FakeRecorder:
    def __init__(self) -> None:
        self.recorded: list[str] = []
        self.spool = FakeSpool(self.recorded)
        self.backlog = SimpleNamespace(requeue=lambda *a: self.recorded.append(("requeue", a)))
        self.clock = SimpleNamespace(seconds=lambda: 100.0)

    def record(self, key, result):
        self.recorded.append(result.job.qid)
        return defer.succeed(None)


def jobs(n):
    return [Job(f"Q{i}", "s@x.test", (f"u{i}@example.com",), f"/new/Q{i}", 1) for i in range(n)]


def result(job, kind="delivered"):
    return JobResult(job, {r: Outcome(kind, 250, "2.0.0 ok") for r in job.recipients})


def test_results_that_come_while_the_connection_goes_on_are_recorded_in_batches():
    recorder, js = FakeRecorder(), jobs(APPLY_EVERY + 2)
    delivery = Delivery(tuple(defer.Deferred() for _ in js), defer.Deferred())
    batches = Batches(recorder, "example.com", js, delivery)
    for i in range(APPLY_EVERY - 1):
        delivery.results[i].callback(result(js[i]))
    assert recorder.recorded == []
    delivery.results[APPLY_EVERY - 1].callback(result(js[APPLY_EVERY - 1]))
    # together: their removals go to the spool process as one request
    assert recorder.recorded == ["(", *[j.qid for j in js[:APPLY_EVERY]], ")"]
    delivery.results[APPLY_EVERY + 1].callback(result(js[APPLY_EVERY + 1]))
    delivery.results[APPLY_EVERY].callback(result(js[APPLY_EVERY]))
    delivery.done.callback(None)
    assert len(recorder.recorded) == APPLY_EVERY + 2
    batches.rest()  # in job order, each once
    assert recorder.recorded[APPLY_EVERY + 2 :] == ["Q50", "Q51"]


def test_results_of_a_session_that_has_ended_are_all_recorded_at_the_end():
    recorder, js = FakeRecorder(), jobs(APPLY_EVERY)
    delivery = Delivery(tuple(defer.succeed(result(j)) for j in js), defer.succeed(None))
    batches = Batches(recorder, "example.com", js, delivery)
    assert recorder.recorded == []  # after the session has told the target's health
    batches.rest()
    assert recorder.recorded == [j.qid for j in js]


def test_results_the_end_of_the_session_decides_wait_for_done():
    """Fired as the session ends (``at_end``), before ``done``: recorded after the session
    has told the target's health, however many, not in a batch."""
    recorder, js = FakeRecorder(), jobs(APPLY_EVERY + 5)
    delivery = Delivery(tuple(defer.Deferred() for _ in js), defer.Deferred())
    batches = Batches(recorder, "example.com", js, delivery)
    delivery.results[0].callback(result(js[0]))  # a transaction that ended mid-session
    for i in range(1, len(js)):
        delivery.results[i].callback(JobResult(js[i], result(js[i], "tempfail").outcomes, True))
    assert recorder.recorded == []
    delivery.done.callback(None)
    batches.rest()
    assert recorder.recorded == [j.qid for j in js]


def test_after_a_local_error_the_results_made_up_at_the_end_are_requeued():
    recorder, js = FakeRecorder(), jobs(2)
    local = JobResult(js[1], result(js[1], "tempfail").outcomes, at_end=True)
    delivery = Delivery((defer.succeed(result(js[0])), defer.succeed(local)), defer.succeed(None))
    Batches(recorder, "example.com", js, delivery).rest(local_error=True)
    assert recorder.recorded == ["Q0", ("requeue", ("Q1", "example.com", 160.0))]


def test_a_missing_result_is_not_left_in_flight():
    recorder, js = FakeRecorder(), jobs(2)
    delivery = Delivery((defer.succeed(result(js[0])), defer.Deferred()), defer.succeed(None))
    Batches(recorder, "example.com", js, delivery).rest()
    assert recorder.recorded == ["Q0", ("requeue", ("Q1", "example.com", 160.0))]
