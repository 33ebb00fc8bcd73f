"""The in-flight registry: one owner of what is being tried; pure."""

from __future__ import annotations

from mxbackup.outbound.inflight import InFlight
from mxbackup.queue.envelope import Envelope, Recipient


def envelope(qid="q1"):
    return Envelope(
        id=qid,
        sender="s@sender.test",
        recipients=[Recipient("a@example.com", "example.com"), Recipient("b@other.test", None)],
        received_at=0,
        size=1,
    )


def test_waiting_line_per_target_in_order():
    f = InFlight()
    for qid in ("q1", "q2", "q3"):
        f.wait(qid, "example.com")
    f.wait("q1", "example.com")  # already in flight: not twice
    f.wait("q9", "other")
    assert f.waiting("example.com") == 3 and len(f) == 4
    assert f.next_batch("example.com", 2) == ["q1", "q2"]
    assert f.next_batch("example.com", 2) == ["q3"]
    assert f.waiting("example.com") == 0 and ("q3", "example.com") in f  # sent, still in flight
    assert f.drain("other") == ["q9"] and f.drain("other") == []


def test_release_ends_it_and_clears_the_recipients_at_that_target_only():
    f = InFlight()
    env = envelope()
    f.wait("q1", "example.com")
    f.wait("q1", "mx:other.test")
    f.sending(env.recipients)
    assert f.busy("q1")
    assert f.release("q1", "example.com", env) is False
    assert [r.inflight for r in env.recipients] == [False, True]
    assert f.busy("q1")  # still in flight to the other target
    f.release("q1", "mx:other.test", env)
    assert not f.busy("q1") and len(f) == 0
    assert f.release("q1", "mx:other.test", None) is False  # twice: nothing


def test_a_flush_passing_over_an_entry_is_remembered_until_release():
    f = InFlight()
    assert f.flush("q1", "example.com") is False  # not in flight: the caller schedules it
    f.wait("q1", "example.com")
    assert f.flush("q1", "example.com") is True
    assert f.release("q1", "example.com", None) is True
    f.wait("q1", "example.com")
    assert f.release("q1", "example.com", None) is False  # a new flight starts unflushed
