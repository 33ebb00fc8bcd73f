"""How the scheduler files a big queue read in the background (mxbackup.outbound.loading):
probes as targets are met, a flushed target's mail due as it is read, the end's probes."""

from __future__ import annotations

from mxbackup.outbound.backlog import Backlog
from mxbackup.outbound.health import Health
from mxbackup.outbound.loading import BackgroundFiling
from mxbackup.queue.recovery import Chunk

LATER = 5_000.0


def chunk(key: str, *qids: str, held: tuple[str, ...] = ()) -> Chunk:
    """Messages waiting at ``key``, next try at ``LATER`` (packed envelopes not needed)."""
    at = {key: (list(qids), [1] * len(qids), [LATER] * len(qids))}
    return Chunk(list(qids), [b""] * len(qids), list(held), at, [], [], [])


def filing() -> BackgroundFiling:
    return BackgroundFiling(Backlog(), Health())


def test_each_target_is_probed_when_first_met() -> None:
    f = filing()
    f.begin()
    f.file(chunk("a", "Q1"), 0.0)
    assert [t.key for t in f.health.startup_probes()] == ["a"]
    f.file(chunk("a", "Q2"), 0.0)
    f.file(chunk("b", "Q3"), 0.0)
    assert [t.key for t in f.health.startup_probes()] == ["b"]  # a: met before


def test_a_flushed_target_s_mail_is_due_as_it_is_read_but_not_the_held() -> None:
    f = filing()
    f.begin()
    f.file(chunk("a", "Q1"), 0.0)
    f.note_flush(["a"])
    assert f.file(chunk("a", "Q2", "Q3", held=("Q3",)), 10.0) == 1
    assert f.backlog.due.when(("Q2", "a")) == 10.0
    assert f.backlog.due.when(("Q3", "a")) == LATER
    assert f.file(chunk("b", "Q4"), 10.0) == 0  # not flushed: its own time
    f.health.failed(f.health.get("a"), "gone", 11.0, 30.0)
    assert f.file(chunk("a", "Q5"), 12.0) == 0  # down since: the probes decide


def test_without_a_load_nothing_is_flushed_on_filing() -> None:
    f = filing()
    f.note_flush(["a"])
    assert f.file(chunk("a", "Q1"), 0.0) == 0


def test_the_end_probes_what_was_met_and_never_flushed() -> None:
    f = filing()
    f.begin()
    f.file(chunk("a", "Q1"), 0.0)
    f.file(chunk("b", "Q2"), 0.0)
    list(f.health.startup_probes())  # made (or dropped: another probe ran)
    f.note_flush(["a"])
    f.end()
    assert [t.key for t in f.health.startup_probes()] == ["b"]
    assert f.flushed is None
