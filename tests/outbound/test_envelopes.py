"""The queue's envelopes in memory: objects while in use, packed otherwise, one object per
message whatever the order of lookups and packing."""

from __future__ import annotations

import pytest

from helpers import sample_envelope
from mxbackup.outbound import envelopes as envelopes_module
from mxbackup.outbound.envelopes import Envelopes
from mxbackup.queue.envelope import Envelope, Recipient


@pytest.fixture(autouse=True)
def keep_none(monkeypatch):
    monkeypatch.setattr(envelopes_module, "KEEP", 0)


def add(queue: Envelopes, qid: str) -> None:
    queue.put(Envelope(qid, "s@sender.test", [Recipient("a@example.com", "example.com")], 1.0, 10))


def test_idle_envelopes_are_packed_and_unpacked_once_when_looked_up():
    queue = Envelopes()
    for qid in ("A", "B", "C"):
        add(queue, qid)
    assert queue.compact(lambda qid: qid != "B") == 2  # B is in flight
    assert queue.objects() == 1 and len(queue) == 3 and set(queue) == {"A", "B", "C"}
    a = queue["A"]
    assert a is queue.get("A") and queue.objects() == 2  # kept: one object from now on
    a.recipients[0].attempts = 5
    del a
    queue.compact(lambda qid: True)
    assert queue.objects() == 0
    assert queue["A"].recipients[0].attempts == 5  # what was changed was packed with it


def test_an_envelope_somebody_holds_is_not_packed():
    queue = Envelopes()
    add(queue, "A")
    add(queue, "B")
    held = queue["A"]
    rcpt = queue["B"].recipients[0]
    assert queue.compact(lambda qid: True) == 0
    assert queue["A"] is held and queue["B"].recipients[0] is rcpt
    del held, rcpt
    assert queue.compact(lambda qid: True) == 2


def test_peek_and_view_read_without_keeping():
    queue = Envelopes()
    add(queue, "A")
    queue.compact(lambda qid: True)
    view = queue.view()
    assert view["A"].id == "A" and queue.peek("A").id == "A"  # type: ignore[union-attr]
    assert queue.objects() == 0
    assert "A" in view and len(view) == 1 and queue.peek("Z") is None
    with pytest.raises(KeyError):
        view["Z"]


def test_a_small_queue_is_never_packed(monkeypatch):
    monkeypatch.setattr(envelopes_module, "KEEP", 2)
    queue = Envelopes()
    for qid in "ABC":
        add(queue, qid)
    assert queue.compact(lambda qid: True) == 1 and queue.objects() == 2


def test_arrival_of_a_packed_message_is_read_from_its_id():
    queue = Envelopes()
    queue.put(Envelope("18B1A2C3D4E5F0A1B2C", "", [], 7.0, 1))
    assert queue.arrival("18B1A2C3D4E5F0A1B2C") == 7.0
    queue.compact(lambda qid: True)
    assert queue.arrival("18B1A2C3D4E5F0A1B2C") == int("18B1A2C3D4E5F", 16) / 1e6


def test_discard():
    queue = Envelopes()
    add(queue, "A")
    add(queue, "B")
    queue.compact(lambda qid: qid == "A")
    queue.discard("A")
    queue.discard("B")
    assert len(queue) == 0 and dict(queue) == {}


def test_each_call_packs_at_least_what_was_unpacked_since_the_last(monkeypatch):
    monkeypatch.setattr(envelopes_module, "PACK_PER_CALL", 2)
    queue = Envelopes()
    for qid in "ABCDEF":
        add(queue, qid)
    queue.compact(lambda qid: True, limit=6)
    for qid in "ABCDE":  # e.g. tries at a dead target: unpacked, changed, let go
        queue[qid].recipients[0].attempts += 1
    assert queue.compact(lambda qid: True) == 5 and queue.objects() == 0


def test_this_python_counts_references_as_packing_expects():
    assert envelopes_module._REFCOUNTS_AS_EXPECTED


def test_the_snapshot_s_items_are_the_packed_ones_not_doubted():
    """A clean stop's snapshot (``queue.snapshot``): objects and doubted envelopes (a write of
    theirs failed) are left out; the next start-up reads their files."""
    envelopes = Envelopes()
    envelopes.put_packed(["Q1", "Q2", "Q3"], [b"1", b"2", b"3"])
    envelopes.put(sample_envelope("Q4"))
    envelopes.doubt("Q2")
    assert envelopes.packed_items() == [("Q1", b"1"), ("Q3", b"3")]
