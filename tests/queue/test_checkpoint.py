"""The checkpoint and recovery's check of recent commits (mxbackup.queue.checkpoint).

A torn commit is simulated as a crash would leave it with delayed allocation: names in new/
and env/, data short, empty or wrong.  Written since the checkpoint (less its margin), it
goes to corrupt/ and is not loaded; older, it is not looked for (today's behaviour)."""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import formatEvent, globalLogPublisher

from helpers import one_recipient_envelope, spool_files, sync_thread
from mxbackup.queue import checkpoint, rounds
from mxbackup.queue.envelope import Envelope
from mxbackup.queue.incoming import SPILL
from mxbackup.queue.rounds import CHECKPOINT
from mxbackup.queue.spool import Spool


@pytest.fixture
def logged() -> Iterator[list[str]]:
    lines: list[str] = []

    def observe(event: dict[str, Any]) -> None:
        lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


def queue(root: Path, *bodies: bytes) -> list[str]:
    """Commit each of ``bodies`` (in memory); their ids."""
    spool = Spool(str(root), sync_thread)
    spool.recover()
    ids = []
    for body in bodies:
        inc = spool.incoming()
        inc.write(body)
        d = spool.commit(inc, one_recipient_envelope(inc.id, inc.size))
        assert d.called and d.result is None
        ids.append(inc.id)
    return ids


def truncate_message(root: Path, qid: str) -> None:
    path = root / "new" / qid
    path.write_bytes(path.read_bytes()[:3])


def zero_message(root: Path, qid: str) -> None:  # blocks allocated, never written
    path = root / "new" / qid
    path.write_bytes(b"\0" * len(path.read_bytes()))


def flip_a_byte(root: Path, qid: str) -> None:
    path = root / "new" / qid
    data = bytearray(path.read_bytes())
    data[-3] ^= 0x20
    path.write_bytes(bytes(data))


def empty_envelope(root: Path, qid: str) -> None:
    (root / "env" / qid).write_bytes(b"")


def age(root: Path, qid: str, seconds: float) -> None:
    """Make ``env/<qid>`` look written ``seconds`` before the checkpoint."""
    t = (root / CHECKPOINT).stat().st_mtime - seconds
    os.utime(root / "env" / qid, (t, t))


DAMAGE: list[Callable[[Path, str], None]] = [
    truncate_message,
    zero_message,
    flip_a_byte,
    empty_envelope,
]


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_recent_torn_commit_goes_to_corrupt(
    tmp_path: Path, damage: Any, logged: list[str]
) -> None:
    root = tmp_path / "spool"
    whole, torn = queue(root, b"whole message\r\n", b"torn message\r\n")
    damage(root, torn)
    age(root, torn, 1.0)  # within the margin: checked
    assert [e.id for e in Spool(str(root), sync_thread).recover()] == [whole]
    assert spool_files(root, "corrupt") == [torn, torn + ".env"]
    assert spool_files(root, "new") == [whole] == spool_files(root, "env")
    assert any(torn in line and "torn commit, never acknowledged" in line for line in logged)


@pytest.mark.parametrize("damage", [truncate_message, zero_message, flip_a_byte])
def test_old_commits_are_not_read(tmp_path: Path, damage: Any, logged: list[str]) -> None:
    """Before the checkpoint's margin a round is known complete: the message is not read (a
    million queued recover as fast as before), whatever it holds."""
    root = tmp_path / "spool"
    (qid,) = queue(root, b"an old message\r\n")
    damage(root, qid)
    age(root, qid, checkpoint.RECENT_MARGIN + 1)
    assert [e.id for e in Spool(str(root), sync_thread).recover()] == [qid]
    assert spool_files(root, "corrupt") == []


def test_an_old_unreadable_envelope_is_corrupt_as_before(tmp_path: Path, logged: list[str]) -> None:
    root = tmp_path / "spool"
    (qid,) = queue(root, b"an old message\r\n")
    empty_envelope(root, qid)
    age(root, qid, checkpoint.RECENT_MARGIN + 1)
    assert Spool(str(root), sync_thread).recover() == []
    assert spool_files(root, "corrupt") == [qid, qid + ".env"]
    assert not any("torn" in line for line in logged)


def test_a_spool_without_checkpoint_is_trusted_as_before(tmp_path: Path) -> None:
    """Written by code that synced data before names: nothing torn to look for; the
    checkpoint is created for the rounds to come."""
    root = tmp_path / "spool"
    (qid,) = queue(root, b"from the old code\r\n")
    (root / CHECKPOINT).unlink()
    truncate_message(root, qid)
    assert [e.id for e in Spool(str(root), sync_thread).recover()] == [qid]
    assert spool_files(root, "corrupt") == []
    assert (root / CHECKPOINT).exists()


def test_the_checkpoint_is_read_before_the_first_open_creates_it(tmp_path: Path) -> None:
    """The server opens the spool (its own check of the directory) before it recovers: the
    checkpoint that open creates must not make the old spool's last commits 'recent'."""
    root = tmp_path / "spool"
    (qid,) = queue(root, b"from the old code\r\n")
    (root / CHECKPOINT).unlink()
    truncate_message(root, qid)
    spool = Spool(str(root), sync_thread)
    spool.open()
    assert [e.id for e in spool.recover()] == [qid]
    assert spool_files(root, "corrupt") == []


def test_an_envelope_without_crc_is_not_checked(tmp_path: Path) -> None:
    """An envelope from before the field (or of a spilled message, or updated) has no CRC."""
    root = tmp_path / "spool"
    (qid,) = queue(root, b"message\r\n")
    raw = json.loads((root / "env" / qid).read_bytes())
    del raw["crc"]
    (root / "env" / qid).write_bytes(json.dumps(raw).encode())
    truncate_message(root, qid)
    assert [e.id for e in Spool(str(root), sync_thread).recover()] == [qid]


def test_the_envelope_records_the_stored_bytes(tmp_path: Path) -> None:
    """Size and CRC32 of what is stored: the header fields added on top included; the
    envelope kept in memory carries no CRC (nor does a recovered one)."""
    root = tmp_path / "spool"
    spool = Spool(str(root), sync_thread)
    spool.recover()
    inc = spool.incoming()
    inc.write(b"Subject: x\r\n\r\nbody\r\n")
    inc.add_prefix(b"Authentication-Results: mx; none\r\n")
    env = one_recipient_envelope(inc.id, inc.size)
    assert spool.commit(inc, env).result is None
    stored = (root / "new" / inc.id).read_bytes()
    on_disk = Envelope.from_json((root / "env" / inc.id).read_bytes())
    assert (on_disk.size, on_disk.crc) == (len(stored), zlib.crc32(stored))
    assert env.crc is None and env.size == len(stored)
    (loaded,) = Spool(str(root), sync_thread).recover()
    assert loaded.crc is None and loaded == env


def test_a_spilled_message_records_no_crc(tmp_path: Path) -> None:
    """It is fsync'd by name before its rename: never torn."""
    root = tmp_path / "spool"
    spool = Spool(str(root), sync_thread)
    spool.recover()
    inc = spool.incoming()
    inc.write(b"x" * (SPILL + 1))
    inc.add_prefix(b"X-Check: 1\r\n")
    assert spool.commit(inc, one_recipient_envelope(inc.id, inc.size)).result is None
    on_disk = Envelope.from_json((root / "env" / inc.id).read_bytes())
    assert on_disk.crc is None and on_disk.size == (root / "new" / inc.id).stat().st_size


def test_recovery_makes_the_recent_commits_it_keeps_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """If only the server died, a recent commit may be whole in the page cache and not on
    disk: synced before any round can move the checkpoint past it.  Old ones are not."""
    root = tmp_path / "spool"
    recent, old = queue(root, b"recent\r\n", b"old\r\n")
    age(root, old, checkpoint.RECENT_MARGIN + 1)
    synced: list[list[str]] = []
    monkeypatch.setattr(checkpoint, "make_durable", lambda r, paths, sync: synced.append(paths))
    Spool(str(root), sync_thread).recover()
    assert synced == [[str(root / "new" / recent), str(root / "env" / recent)]]
    age(root, recent, checkpoint.RECENT_MARGIN + 1)
    synced.clear()
    Spool(str(root), sync_thread).recover()
    assert synced == []


def test_make_durable_is_one_syncfs_or_an_fsync_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As the spool's mode does (fsync: the spool may share its file system with writers)."""
    root = tmp_path / "spool"
    (qid,) = queue(root, b"message\r\n")
    paths = [str(root / "new" / qid), str(root / "env" / qid)]
    calls: list[str] = []
    monkeypatch.setattr(
        rounds, "SYNCFS", lambda fd: calls.append(os.readlink(f"/proc/self/fd/{fd}"))
    )
    real = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: (calls.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd))
    )
    checkpoint.make_durable(str(root), paths, "syncfs")
    assert calls == [str(root)]
    calls.clear()
    checkpoint.make_durable(str(root), paths, "fsync")
    assert calls == paths


def test_open_creates_a_missing_checkpoint_durable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    synced: list[str] = []
    real = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real(fd))
    )
    root = tmp_path / "spool"
    Spool(str(root), sync_thread).open()
    assert synced[:2] == [str(root / CHECKPOINT), str(root)]
    assert (
        checkpoint.recent_since(str(root))
        == (root / CHECKPOINT).stat().st_mtime - checkpoint.RECENT_MARGIN
    )


# -- the pin: a load in the background (``queue.recoverysteps``) ------------------------------
def test_a_pinned_window_outlasts_rounds_that_move_the_checkpoint(tmp_path: Path) -> None:
    """A crash in the middle of a load in the background: the rounds of the mail accepted
    meanwhile moved the checkpoint on, yet the commit the crash before tore is still checked
    at the next start (the pin), and found torn."""
    root = tmp_path / "spool"
    whole, torn = queue(root, b"whole message\r\n", b"torn message\r\n")
    damage_at = (root / CHECKPOINT).stat().st_mtime
    zero_message(root, torn)
    age(root, torn, 1.0)
    spool = Spool(str(root), sync_thread)
    recovery = spool.begin_recovery()  # as the server does for a big queue: pinned
    recovery.pin()
    later = damage_at + 60  # rounds since: the checkpoint is a minute later
    os.utime(root / CHECKPOINT, (later, later))
    # the server is killed here, before the load finished; the next start:
    assert [e.id for e in Spool(str(root), sync_thread).recover()] == [whole]
    assert spool_files(root, "corrupt") == [torn, torn + ".env"]
    assert not (root / checkpoint.PIN).exists()  # that recovery finished: the pin is lifted


def test_without_the_pin_those_rounds_would_have_hidden_the_torn_commit(tmp_path: Path) -> None:
    """The premise of the test above: the moved checkpoint alone no longer covers it."""
    root = tmp_path / "spool"
    whole, torn = queue(root, b"whole message\r\n", b"torn message\r\n")
    zero_message(root, torn)
    age(root, torn, 1.0)
    later = (root / CHECKPOINT).stat().st_mtime + 60
    os.utime(root / CHECKPOINT, (later, later))
    assert sorted(e.id for e in Spool(str(root), sync_thread).recover()) == sorted([whole, torn])


def test_the_pin_takes_the_earlier_window_and_ignores_a_bad_file(tmp_path: Path) -> None:
    root = tmp_path / "spool"
    queue(root, b"m\r\n")
    at = (root / CHECKPOINT).stat().st_mtime
    assert checkpoint.recent_since(str(root)) == at - checkpoint.RECENT_MARGIN
    checkpoint.pin(str(root), at - 100)
    assert checkpoint.recent_since(str(root)) == at - 100
    checkpoint.pin(str(root), at + 100)  # later than the checkpoint's: the checkpoint's
    assert checkpoint.recent_since(str(root)) == at - checkpoint.RECENT_MARGIN
    (root / checkpoint.PIN).write_bytes(b"\0\0")  # torn while written: before any round
    assert checkpoint.recent_since(str(root)) == at - checkpoint.RECENT_MARGIN
    checkpoint.unpin(str(root))
    checkpoint.unpin(str(root))  # twice: nothing to lift
    assert not (root / checkpoint.PIN).exists()


def test_no_pin_without_a_window(tmp_path: Path) -> None:
    """A spool without checkpoint is trusted as a whole: nothing to pin."""
    root = tmp_path / "spool"
    root.mkdir()
    checkpoint.pin(str(root), None)
    assert not (root / checkpoint.PIN).exists()


def test_fsync_mode_skips_a_commit_removed_since(tmp_path: Path, monkeypatch) -> None:
    """Regression (review): a big queue read in the background makes its recent commits
    durable at its end; one delivered meanwhile is gone, and must not stop the rest."""
    root = tmp_path / "spool"
    kept, gone = queue(root, b"kept\r\n", b"delivered meanwhile\r\n")
    (root / "new" / gone).unlink()
    (root / "env" / gone).unlink()
    synced: list[str] = []
    real = rounds.fsync_path

    def fsync(path: str) -> None:
        real(path)
        synced.append(os.path.basename(path))

    monkeypatch.setattr(rounds, "fsync_path", fsync)
    checkpoint.keep_durable(str(root), [gone, kept], "fsync")
    assert synced == [kept, kept]
