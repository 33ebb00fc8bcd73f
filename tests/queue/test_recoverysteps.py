"""The start-up's reading of the queue in steps (mxbackup.queue.recoverysteps): what ``begin``
decides from the listing it takes, what ``finish`` does, and when a queue is read in the
background."""

from __future__ import annotations

from pathlib import Path

from helpers import committed, spool_files, sync_thread
from mxbackup.queue import checkpoint, recoverysteps
from mxbackup.queue.spool import Spool


def test_leftovers_are_decided_from_the_listing_taken_at_the_beginning(tmp_path: Path) -> None:
    """A message renamed into new/ while the load runs (its envelope comes next in the same
    round) is not "a message without envelope": only what ``begin`` listed is removed."""
    root = tmp_path / "spool"
    ids = committed(root, 3)
    (root / "env" / ids[0]).unlink()  # a removal a crash cut short: a message left alone
    (root / "new" / ids[1]).unlink()  # a commit a crash cut short: an envelope left alone
    recovery = Spool(str(root), sync_thread).begin_recovery()
    assert recovery.names == [ids[2]]
    assert spool_files(root, "env") == [ids[2]]  # the lone envelope went at once
    (root / "new" / "LATER").write_bytes(b"accepted during the load\r\n")
    chunks = list(recovery.read_here())
    recovery.finish()
    assert [q for c in chunks for q in c.qids] == [ids[2]]
    assert spool_files(root, "new") == sorted([ids[2], "LATER"])  # ids[0]'s message went


def test_finish_lifts_the_pin_after_the_rest(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    committed(root, 1)
    recovery = Spool(str(root), sync_thread).begin_recovery()
    recovery.pin()
    assert (root / checkpoint.PIN).exists()
    list(recovery.read_here())
    recovery.finish()
    assert not (root / checkpoint.PIN).exists()


def test_a_big_queue_is_read_in_the_background(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "spool"
    committed(root, 3)
    monkeypatch.setattr(recoverysteps, "BACKGROUND_FROM", 3)
    assert Spool(str(root), sync_thread).begin_recovery().in_background()
    monkeypatch.setattr(recoverysteps, "BACKGROUND_FROM", 4)
    assert not Spool(str(root), sync_thread).begin_recovery().in_background()


def test_a_message_whose_envelope_was_set_aside_before_a_crash_joins_it(tmp_path: Path) -> None:
    """Review: setting aside is two renames; a crash between them left the message alone in
    new/, and it was removed as "a message without envelope".  It goes to corrupt/ too."""
    root = tmp_path / "spool"
    qid, other = committed(root, 2)
    (root / "env" / qid).rename(root / "corrupt" / (qid + ".env"))  # the first rename only
    (root / "env" / other).unlink()  # a removal cut short: this one does go
    Spool(str(root), sync_thread).recover()
    assert spool_files(root, "corrupt") == sorted([qid, qid + ".env"])
    assert spool_files(root, "new") == []


def test_a_chunk_taken_leaves_the_try_log_lines_carried_meanwhile(tmp_path: Path) -> None:
    """``take``: a message's lines of the try log are applied once it is read; the try log
    carries only those of messages still to be read (``tries.TryLog.carried``)."""
    root = tmp_path / "spool"
    ids = committed(root, 2)
    (root / "tries").write_bytes(f"{ids[0]} 5.000 0:2\n{ids[1]} 5.000 0:3\n".encode())
    recovery = Spool(str(root), sync_thread).begin_recovery()
    carried = recovery.logged
    assert set(carried) == set(ids)
    chunks = recovery.read_here()
    next(chunks)  # (one chunk: both read)
    assert carried == {}


def test_the_spool_knows_it_started_from_a_snapshot(tmp_path: Path) -> None:
    """``Spool.from_snapshot``: a run that started from the last stop's snapshot writes one
    at its own stop too (``service``), for the try counts it carried."""
    from mxbackup.queue.packed import pack
    from mxbackup.queue.spool import Spool as SpoolType

    root = tmp_path / "spool"
    committed(root, 2)
    first = SpoolType(str(root), sync_thread)
    envelopes = first.recover()
    assert not first.from_snapshot
    first.write_snapshot([(e.id, pack(e)) for e in envelopes])
    second = SpoolType(str(root), sync_thread)
    second.recover()
    assert second.from_snapshot
