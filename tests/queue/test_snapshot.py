"""The snapshot of a clean stop: the next start-up takes an envelope from it only while the
file is the very one it saw, and anything it cannot trust is read from the files."""

from __future__ import annotations

import os

import pytest

from helpers import sample_envelope, sync_thread
from mxbackup.queue import recovery, snapshot
from mxbackup.queue.packed import pack
from mxbackup.queue.spool import Spool

NAMES = ["Q1", "Q2", "Q3"]


def files(root, names=NAMES, **more) -> None:
    (root / "env").mkdir(exist_ok=True)
    for qid in names:
        (root / "env" / qid).write_bytes(sample_envelope(qid, 1.0, **more).to_json())


def snap(root, names=NAMES) -> int:
    """A snapshot whose envelopes are held (the files' are not): what was taken shows."""
    return snapshot.write(str(root), [(q, pack(sample_envelope(q, 1.0, held=True))) for q in names])


def opened_spool(tmp_path):
    spool = Spool(str(tmp_path / "spool"), sync_thread)
    spool.open()
    return tmp_path / "spool", spool


def read(root, names=NAMES, recent=None, logged=None):
    kept = snapshot.Snapshot.open(str(root))
    return list(recovery.read_all(str(root / "env"), names, 0, recent, logged, kept))


def test_an_unchanged_file_is_taken_from_the_snapshot(tmp_path):
    files(tmp_path)
    assert snap(tmp_path, reversed(NAMES)) == 3  # any order in, sorted out
    [chunk] = read(tmp_path)
    assert chunk.qids == NAMES and chunk.held == NAMES
    assert chunk.from_snapshot == 3
    assert chunk.at == {"example.com": (NAMES, [2, 2, 2], [300.0] * 3)}  # as from the files
    assert not os.path.exists(tmp_path / "snapshot.tmp")


def test_without_a_snapshot_every_file_is_read(tmp_path):
    files(tmp_path)
    [chunk] = read(tmp_path)
    assert chunk.held == [] and chunk.from_snapshot == 0


def test_a_file_rewritten_since_is_read(tmp_path):
    files(tmp_path)
    snap(tmp_path)
    new = tmp_path / "env" / "Q2.new"
    new.write_bytes((tmp_path / "env" / "Q2").read_bytes())
    os.replace(new, tmp_path / "env" / "Q2")  # another inode, as an update's rename makes
    [chunk] = read(tmp_path)
    assert chunk.held == ["Q1", "Q3"] and chunk.from_snapshot == 2


def test_a_recent_file_or_a_logged_try_is_read(tmp_path):
    files(tmp_path)
    for qid in ("Q2", "Q3"):
        os.utime(tmp_path / "env" / qid, (1, 1))  # Q1 was written since the checkpoint
    snap(tmp_path)
    [chunk] = read(tmp_path, recent=1000.0, logged={"Q3": {0: 1}})
    assert chunk.held == ["Q2"] and chunk.from_snapshot == 1


def test_a_message_whose_file_is_gone_is_left_out(tmp_path):
    files(tmp_path, ["Q1", "Q3"])
    assert snap(tmp_path) == 2
    assert snapshot.Snapshot.open(str(tmp_path)).count == 2


@pytest.mark.parametrize(
    "spoil",
    [
        lambda b: b"mxbackup snapshot 2 00000000" + b[28:],  # packed by another dictionary
        lambda b: b[:-3],  # cut short: no footer
        lambda b: b[:-30] + bytes([b[-30] ^ 1]) + b[-29:],  # the index does not match its CRC
        lambda b: b[:-1] + b"x",  # a footer that does not end as one does
        lambda b: b"",
    ],
)
def test_a_snapshot_that_cannot_be_trusted_is_ignored(tmp_path, spoil):
    files(tmp_path)
    snap(tmp_path)
    path = tmp_path / "snapshot"
    path.write_bytes(spoil(path.read_bytes()))
    assert snapshot.Snapshot.open(str(tmp_path)) is None
    [chunk] = read(tmp_path)
    assert chunk.held == [] and chunk.from_snapshot == 0


def test_a_record_that_does_not_match_its_crc_is_read_from_the_file(tmp_path):
    files(tmp_path)
    snap(tmp_path)
    path = tmp_path / "snapshot"
    data = bytearray(path.read_bytes())
    at = data.index(b"Q2") + 2 + snapshot._RECORD.size + 3  # inside Q2's blob
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))
    [chunk] = read(tmp_path)
    assert chunk.held == ["Q1", "Q3"]


def test_a_blob_that_does_not_unpack_is_read_from_the_file(tmp_path):
    files(tmp_path)
    snapshot.write(str(tmp_path), [("Q1", b"not packed at all")])
    [chunk] = read(tmp_path)
    assert chunk.qids == NAMES and chunk.held == [] and chunk.from_snapshot == 0


def test_workers_read_their_own_span(tmp_path, monkeypatch):
    names = [f"Q{i:04}" for i in range(60)]
    files(tmp_path, names)
    monkeypatch.setattr(snapshot, "INDEX_EVERY", 4)
    snap(tmp_path, names[5:])  # Q0000-Q0004 are not in it
    monkeypatch.setattr(recovery, "CHUNK", 7)
    workers = 2 if (os.cpu_count() or 1) >= 2 else 0
    kept = snapshot.Snapshot.open(str(tmp_path))
    chunks = list(recovery.read_all(str(tmp_path / "env"), names, workers, kept=kept))
    assert sum((c.qids for c in chunks), []) == names
    assert sum((c.held for c in chunks), []) == names[5:]
    assert sum(c.from_snapshot for c in chunks) == 55


def indexed(tmp_path, monkeypatch, count: int, every: int):
    """``count`` envelopes in a snapshot indexed every ``every`` records; their ids and it."""
    names = [f"Q{i:04}" for i in range(count)]
    files(tmp_path, names)
    monkeypatch.setattr(snapshot, "INDEX_EVERY", every)
    snap(tmp_path, names)
    return names, snapshot.Snapshot.open(str(tmp_path))


def test_span_covers_the_ids_asked_for(tmp_path, monkeypatch):
    names, kept = indexed(tmp_path, monkeypatch, 20, 3)
    for first, last in [("Q0000", "Q0019"), ("Q0004", "Q0007"), ("A", "Q0001"), ("Q0018", "Z")]:
        found = snapshot.entries(kept.path, kept.span(first, last), first, last)
        assert sorted(found) == [q for q in names if first <= q <= last]


def test_the_spool_uses_the_snapshot_once(tmp_path):
    root, spool = opened_spool(tmp_path)
    for qid in NAMES:
        (root / "new" / qid).write_bytes(b"message\r\n")
    files(root)
    for qid in NAMES:  # written before the checkpoint: no round of theirs can be torn
        os.utime(root / "env" / qid, (1, 1))
    spool.write_snapshot([(q, pack(sample_envelope(q, 1.0, held=True))) for q in NAMES])
    assert [e.held for e in spool.recover()] == [True] * 3
    assert not (root / "snapshot").exists()  # used once
    assert [e.held for e in Spool(str(root), sync_thread).recover()] == [False] * 3


def test_a_snapshot_that_cannot_be_written_leaves_nothing(tmp_path, monkeypatch):
    files(tmp_path)

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(snapshot.os, "fsync", full)
    with pytest.raises(OSError):
        snap(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["env"]


def test_an_unreadable_snapshot_and_a_half_written_one_are_removed_at_start_up(tmp_path):
    root, spool = opened_spool(tmp_path)
    (root / "snapshot").write_bytes(b"mxbackup snapshot 0 (an older format)\n")
    (root / "snapshot.tmp").write_bytes(b"a stop killed while writing it")
    assert spool.recover() == []
    assert not (root / "snapshot").exists() and not (root / "snapshot.tmp").exists()


def test_ids_the_server_does_not_make_are_left_to_the_files(tmp_path):
    odd = ["Q\u00e9", "Q?", "Q" * 300]
    files(tmp_path, odd[:2] + ["Q1"])
    for qid in odd[2:]:  # too long a name for most file systems: only its record is odd
        assert snapshot.write(str(tmp_path), [(qid, b"x")]) == 0
    assert snap(tmp_path, ["Q1", *odd[:2]]) == 1


def test_a_record_whose_id_was_damaged_is_not_taken_for_another(tmp_path):
    files(tmp_path)
    snap(tmp_path)
    path = tmp_path / "snapshot"
    data = path.read_bytes()
    at = data.index(b"Q3")
    path.write_bytes(data[:at] + b"Q2" + data[at + 2 :])  # Q3's record now names Q2
    [chunk] = read(tmp_path)
    assert chunk.held == ["Q1", "Q2"]  # Q2's own record; Q3's fails its CRC: read
    assert chunk.from_snapshot == 2


def test_an_index_out_of_order_is_not_trusted(tmp_path, monkeypatch):
    _, kept = indexed(tmp_path, monkeypatch, 6, 2)
    assert snapshot._in_order(kept._firsts, kept._offsets, kept.end)
    assert not snapshot._in_order(kept._firsts[::-1], kept._offsets, kept.end)
    assert not snapshot._in_order(kept._firsts, kept._offsets[::-1], kept.end)
    assert not snapshot._in_order(kept._firsts, kept._offsets, 0)


def test_a_snapshot_that_would_eat_the_reserved_space_is_not_written(tmp_path, monkeypatch):
    """``server.min_free_space`` holds at a stop too: the snapshot is a cache, never worth
    the space the operator keeps free."""
    root, spool = opened_spool(tmp_path)
    files(root)
    packed = [(q, pack(sample_envelope(q, 1.0))) for q in NAMES]
    need = snapshot.size_of(packed)
    monkeypatch.setattr(spool, "free_space", lambda at_least=0: need + 999)
    with pytest.raises(OSError, match="would leave less than 1000 free"):
        spool.write_snapshot(packed, keep_free=1000)
    assert not (root / "snapshot").exists()
    assert spool.write_snapshot(packed, keep_free=999) == 3
    assert (root / "snapshot").stat().st_size < need + 200  # the estimate is close
