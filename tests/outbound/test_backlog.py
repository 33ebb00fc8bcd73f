"""The backlog: the queue by id and target, the due queue and in-flight state in step."""

from __future__ import annotations

import pytest

from helpers import sample_envelope
from mxbackup.outbound import backlog as backlog_module
from mxbackup.outbound import envelopes as envelopes_module
from mxbackup.outbound.backlog import Backlog, pending_by_target
from mxbackup.turns import at_once


def envelope(qid="q1", received_at=0.0):
    return sample_envelope(qid, received_at)


def test_add_schedules_each_target_at_its_earliest_attempt_or_now_after_a_crash():
    b = Backlog()
    env = envelope()
    b.add(env, now=100.0)
    assert sorted(pending_by_target(env)) == ["example.com", "mx:other.test"]
    assert b.due.when(("q1", "example.com")) == 300.0
    assert b.due.when(("q1", "mx:other.test")) == 100.0  # its try was interrupted: at once
    assert b.depth_by_target() == {"example.com": 1, "mx:other.test": 1}
    assert list(b.due_now(100.0)) == [("q1", "mx:other.test")]
    assert b.pending("q1", "example.com")[1] == env.recipients[:2]
    assert b.pending("nope", "example.com") == (None, [])


def test_in_flight_entries_are_not_due_and_a_flush_passes_over_them():
    b = Backlog()
    b.add(envelope(), now=0.0)
    b.inflight.wait("q1", "example.com")
    assert list(b.due_now(1000.0)) == [("q1", "mx:other.test")]
    assert b.flush(["example.com", "mx:other.test"], now=1000.0) == 1
    assert b.inflight.release("q1", "example.com", None) is True  # remembered for it
    assert list(b.due_now(1000.0)) == [("q1", "mx:other.test")]


def test_requeue_only_what_is_in_flight():
    b = Backlog()
    env = envelope()
    b.add(env, now=0.0)
    list(b.due_now(1000.0))
    b.requeue("q1", "example.com", 2000.0)  # not in flight: nothing
    assert b.due.when(("q1", "example.com")) is None
    b.inflight.wait("q1", "example.com")
    b.requeue("q1", "example.com", 2000.0)
    assert ("q1", "example.com") not in b.inflight
    assert b.due.when(("q1", "example.com")) == 2000.0


def test_reschedule_and_forget():
    b = Backlog()
    env = envelope(received_at=10.0)
    b.add(env, now=0.0)
    b.reschedule(env, "example.com", at=None)
    assert b.due.when(("q1", "example.com")) == 300.0
    b.reschedule(env, "example.com", at=42.0)
    assert b.due.when(("q1", "example.com")) == 42.0
    for rcpt in env.recipients[:2]:
        rcpt.state = "delivered"
    b.reschedule(env, "example.com", at=None)  # nothing pending there: not counted there
    assert b.depth_by_target() == {"mx:other.test": 1} and b.has_mail("mx:other.test")
    assert b.oldest_age(now=25.0) == 15.0
    b.flush_message(env.id, now=5.0)
    assert b.due.when(("q1", "mx:other.test")) == 5.0
    b.forget(env)
    assert b.envelopes == {} and b.depth_by_target() == {} and b.keys() == []
    assert list(b.due_now(10**9)) == [] and b.oldest_age(now=25.0) == 0.0


def test_the_oldest_is_the_smallest_id_packed_or_not(monkeypatch):
    monkeypatch.setattr(envelopes_module, "KEEP", 0)  # a small queue packed too
    b = Backlog()
    assert at_once(b.oldest_envelope_steps()) == (None, None) and b.oldest_age(now=5.0) == 0.0
    for qid in ("B", "A", "C"):
        b.add(envelope(qid, received_at=1.0), now=0.0)
    assert b.envelopes.compact(lambda qid: qid != "C", limit=3) == 2
    assert b.envelopes.objects() == 1  # A and B packed
    assert at_once(b.oldest_steps()) == "A"
    assert at_once(b.oldest_envelope_steps("example.com"))[1].id == "A"
    b.forget(b.envelopes["A"])
    b.envelopes.compact(lambda qid: True, limit=3)
    assert b.envelopes.loaded("B") is None  # packed: its received_at read all the same
    assert at_once(b.oldest_envelope_steps())[1].id == "B" and b.oldest_age(now=5.0) == 4.0


def test_the_scans_of_status_and_stats_look_at_a_slice_per_turn(monkeypatch):
    """A million ids at once stalled acceptance ~100 ms per ``stats`` or scrape: the scans
    yield between slices (``turns.in_turns`` runs a slice per turn of the reactor)."""
    monkeypatch.setattr(backlog_module, "SCAN_SLICE", 2)
    b = Backlog()
    for qid in ("E", "D", "C", "B", "A"):
        b.add(envelope(qid, received_at=1.0), now=0.0)
    steps = b.oldest_steps("example.com")
    turns = 0
    with pytest.raises(StopIteration) as end:
        while True:
            next(steps)
            turns += 1
            if "A" in b.envelopes:
                b.forget(b.envelopes["A"])  # delivered meanwhile
    assert turns == 3 and end.value.value == "A"  # the oldest when asked


def test_small_queues_are_answered_at_once():
    b = Backlog()
    b.add(envelope("A"), now=0.0)
    with pytest.raises(StopIteration):
        next(b.oldest_steps())
