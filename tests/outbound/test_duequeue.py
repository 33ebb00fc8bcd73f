"""The due queue: a timer wheel, pure."""

from __future__ import annotations

import math
import random

from mxbackup.outbound.duequeue import DueQueue


def test_entries_come_out_in_time_order_once_due():
    q = DueQueue()
    q.schedule("c", 105.5)
    q.schedule("a", 100.2)
    q.schedule("b", 101.0)
    assert list(q.pop_due(99.9)) == []
    assert list(q.pop_due(101.0)) == ["a", "b"]
    assert list(q.pop_due(200)) == ["c"]
    assert len(q) == 0 and list(q.pop_due(300)) == []


def test_a_later_filing_supersedes_an_earlier_one_and_vice_versa():
    q = DueQueue()
    q.schedule("m", 100.0)
    q.schedule("m", 150.0)  # later: not due at 100
    assert list(q.pop_due(120)) == []
    assert q.when("m") == 150.0
    q.schedule("m", 110.0)  # earlier again (a flush): due then, once
    assert list(q.pop_due(200)) == ["m"]
    assert "m" not in q and list(q.pop_due(500)) == []


def test_later_in_the_same_second_waits():
    q = DueQueue()
    q.schedule("early", 100.2)
    q.schedule("late", 100.8)
    assert list(q.pop_due(100.5)) == ["early"]
    assert q.filed() == 1
    q.schedule("again", 100.9)  # filed in the same slot meanwhile
    assert list(q.pop_due(101)) == ["late", "again"]


def test_what_is_filed_due_during_a_pass_is_taken_in_the_same_pass():
    q = DueQueue()
    q.schedule("first", 10)
    taken = []
    for entry in q.pop_due(10):
        taken.append(entry)
        if entry == "first":
            q.schedule("second", 10)  # e.g. a DSN queued while recording
    assert taken == ["first", "second"]


def test_cancel_and_counts():
    q = DueQueue()
    q.schedule("x", 5)
    q.schedule("x", 6)
    q.schedule("y", 7)
    assert len(q) == 2 and q.filed() == 3  # superseded filings stay until their slot is taken
    q.cancel("x")
    q.cancel("absent")
    assert list(q.pop_due(10)) == ["y"]
    assert q.filed() == 0 and q.when("x") is None


def test_a_limit_takes_that_many_and_leaves_the_rest_filed():
    q = DueQueue()
    for i, entry in enumerate("abcdef"):
        q.schedule(entry, 100.0 + i / 10)
    q.schedule("z", 300.0)
    assert list(q.pop_due(200, limit=4)) == ["a", "b", "c", "d"]
    assert len(q) == 3 and q.when("e") == 100.4
    assert list(q.pop_due(200, limit=4)) == ["e", "f"]
    assert list(q.pop_due(400)) == ["z"]


def test_file_all_at_supersedes_like_schedule():
    q = DueQueue()
    q.schedule("a", 500.0)
    q.file_all_at(["a", "b", "c"], 100.5)
    q.file_many(["d"], [100.7])
    assert q.has_due(101) and not q.has_due(99)
    assert list(q.pop_due(101)) == ["a", "b", "c", "d"]
    assert list(q.pop_due(600)) == [] and len(q) == 0


def test_what_a_caller_does_not_take_stays_filed_even_if_it_stops_early():
    q = DueQueue()
    for i, entry in enumerate("abcdef"):
        q.schedule(entry, 100.0 + i / 10)
    q.schedule("g", 200.9)
    taking = q.pop_due(200.5)
    assert [next(taking), next(taking)] == ["a", "b"]
    taking.close()  # a tick that failed half-way
    assert list(q.pop_due(200.5)) == ["c", "d", "e", "f"]  # g: later in its second
    assert q.when("g") == 200.9 and list(q.pop_due(201)) == ["g"]


def test_entries_filed_meanwhile_in_an_earlier_second_are_taken_in_the_same_pass():
    q = DueQueue()
    q.schedule("b", 105.0)
    taken = []
    for entry in q.pop_due(110):
        taken.append(entry)
        if entry == "b":
            q.schedule("a", 101.0)  # e.g. a flush while the tick runs
    assert taken == ["b", "a"] and len(q) == 0
    q.schedule("c", 101.5)  # the earlier second again, after its stale heap entry
    assert list(q.pop_due(110)) == ["c"] and q.filed() == 0


def test_taking_a_little_from_a_huge_second_costs_what_is_taken():
    q = DueQueue()
    q.file_all_at(list(range(200_000)), 50.0)
    for _ in range(100):
        assert len(list(q.pop_due(60, limit=10))) == 10
    assert len(q) == 200_000 - 1000 and q.filed() == 200_000 - 1000


def test_a_bulk_filing_is_taken_in_order_around_later_and_superseded_entries():
    q = DueQueue()
    q.schedule("first", 50.1)
    q.file_all_at(["a", "b", "c", "d"], 50.5)
    q.schedule("b", 80.0)  # superseded in the run: skipped there, due later
    q.schedule("last", 50.2)
    assert q.filed() == 7 and len(q) == 6
    assert list(q.pop_due(50.3)) == ["first", "last"]  # the run is later in its second
    assert q.filed() == 4  # a, c, d stay filed in their order; b's old filing is gone
    assert list(q.pop_due(51, limit=2)) == ["a", "c"]
    assert q.filed() == 2 and list(q.pop_due(51)) == ["d"]
    assert list(q.pop_due(90)) == ["b"] and q.filed() == 0 and len(q) == 0


def test_a_flush_of_many_is_one_object_to_the_cyclic_gc():
    import gc

    q = DueQueue()
    q.file_all_at([f"id{i}" for i in range(100_000)], 50.0)
    gc.collect()
    (slot,) = q._slots.values()
    (run,) = slot  # what a full collection visits: one object ...
    assert not gc.is_tracked(run.entries)  # ... whose tuple of ids it no longer tracks
    assert len(list(q.pop_due(60, limit=10))) == 10 and q.filed() == 100_000 - 10


def test_entries_filed_one_by_one_are_packed_in_runs_and_come_out_in_order():
    import gc

    from mxbackup.outbound.duequeue import PACK

    q = DueQueue()
    ids = [f"id{i}" for i in range(PACK * 40 + 7)]
    for i, qid in enumerate(ids):
        q.schedule(qid, 50.0 + (i % 2) / 2)  # one slot: 50.0 and 50.5 in turn
    q.file_many(["m1", "m2"], [50.9, 50.9])
    gc.collect()
    (slot,) = q._slots.values()
    assert len(slot) < 50  # what a full collection visits: runs, not 10,000 ids
    assert q.filed() == len(ids) + 2 and len(q) == len(ids) + 2
    assert list(q.pop_due(50.2, limit=100)) == ids[0:200:2]  # the 50.0 ones ...
    passed_over = ids[1:200:2]  # ... and the 50.5 ones passed over come first next time
    assert list(q.pop_due(51)) == passed_over + ids[200:] + ["m1", "m2"]
    assert q.filed() == 0 and len(q) == 0 and not q._slots


class _Plain:
    """The model: a dict of entry -> time, and a DueQueue fed the same operations."""

    def __init__(self, rng: random.Random) -> None:
        self.rng, self.q, self.model, self.now, self.names = rng, DueQueue(), {}, 100.0, 0

    def fresh(self, k: int) -> list[str]:
        self.names += k
        return [f"m{self.names - i}" for i in range(k)]

    def some(self, k: int) -> list[str]:
        return self.rng.sample(list(self.model), min(len(self.model), k))

    def step(self, depth: int = 0) -> None:
        rng, op = self.rng, self.rng.random()
        if op < 0.35:  # one by one, a new entry or one filed again
            entry = (self.some(1) if rng.random() < 0.3 else []) or self.fresh(1)
            self.model[entry[0]] = self.now + rng.uniform(-1, 8)
            self.q.schedule(entry[0], self.model[entry[0]])
        elif op < 0.5:  # many new ones (a start-up's load)
            entries = self.fresh(rng.randrange(1, 400))
            whens = [self.now + rng.uniform(-1, 8) for _ in entries]
            self.model.update(zip(entries, whens, strict=True))
            self.q.file_many(entries, whens)
        elif op < 0.6:  # a flush: filed ones and new ones at one time
            entries = self.some(rng.randrange(0, 300)) + self.fresh(rng.randrange(0, 300))
            when = self.now + rng.uniform(-1, 3)
            self.model.update(dict.fromkeys(entries, when))
            self.q.file_all_at(entries, when)
        elif op < 0.7 and self.model:
            entry = self.some(1)[0]
            del self.model[entry]
            self.q.cancel(entry)
        else:
            self.take(rng.choice([math.inf, rng.randrange(0, 200)]), depth)
        assert len(self.q) == len(self.model)
        assert depth or self.q.filed() >= len(self.model)  # (a pass holds its later ones)
        assert all(self.q.when(e) == self.model[e] for e in self.some(20))

    def take(self, stop: float, depth: int = 0) -> None:
        """A pass of ``pop_due``; between two entries the caller may file, cancel or even
        take (a nested pass) at times."""
        self.now += self.rng.uniform(0, 2)
        now, taken, slots, nested = self.now, [], [], False
        for entry in self.q.pop_due(now):
            when = self.model.pop(entry)  # it was filed
            assert when <= now
            taken.append(entry)
            slots.append(math.floor(when))
            if len(taken) >= stop:
                break  # the caller stops early: the rest stays filed
            if depth < 2 and self.rng.random() < 0.03:
                nested = True
                self.step(depth + 1)
        if not nested:  # (what a nested step files may be due in an earlier second)
            assert len(taken) == len(set(taken)) and slots == sorted(slots)
        if stop == math.inf and not nested and not depth:  # (else: for the next pass)
            assert not [e for e, w in self.model.items() if w <= now]


def test_random_filings_and_takings_agree_with_a_plain_model():
    """Every way of filing (one by one, many, a flush; runs packed and not) against a dict
    of entry -> time: what is taken was due, is taken once, in slot order, and nothing due
    is left behind; a caller that stops early leaves the rest filed."""
    rng = random.Random(20261207)
    for _ in range(10):
        plain = _Plain(rng)
        for _ in range(300):
            plain.step()
        assert sorted(plain.q.pop_due(math.inf)) == sorted(plain.model)  # type: ignore[type-var]
        assert len(plain.q) == 0 and plain.q.filed() == 0


def test_a_nested_pass_that_takes_the_whole_second_strands_nothing():
    """The caller takes again between two entries (the scheduler does not, but nothing
    may be stranded if one does): the nested pass empties and drops the second the outer
    pass is in, then an entry is filed in that second. It was left filed in a slot
    nobody knew of (never due again); now the outer pass takes it."""
    q = DueQueue()
    q.schedule("a", 100.1)
    q.schedule("b", 100.2)
    outer = q.pop_due(100.5)
    assert next(outer) == "a"
    assert list(q.pop_due(100.5)) == ["b"]
    q.schedule("c", 100.3)
    assert list(outer) == ["c"]
    assert len(q) == 0 and q.filed() == 0


def test_a_flush_taken_before_its_time_stays_one_run():
    q = DueQueue()
    q.file_all_at([f"m{i}" for i in range(1000)], 50.5)
    assert list(q.pop_due(50.2)) == []  # all later in the second: put back
    assert q.filed() == 1000
    assert len(q._slots[50]) == 1  # one run, not a thousand items
    assert list(q.pop_due(50.5)) == [f"m{i}" for i in range(1000)]
    assert q.filed() == 0
