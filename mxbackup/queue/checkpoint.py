"""The spool's checkpoint, and recovery's check of the commits a crash may have torn.

Pure file-system code: no reactor.  With ``syncfs``, a round of commits and removals makes
its data *and* its names durable with one syncfs, after the renames (``rounds.run_round``).  A
crash before that syncfs completes may leave a name whose data never reached the disk
(delayed allocation: a rename can be committed before the file's blocks are written), but
only for a commit that got no 250.  Recovery tells those apart without reading old mail:

- each round sets the mtime of ``<spool>/.synced`` (``rounds.CHECKPOINT``) as it starts,
  before it writes anything; rounds run one at a time, so the durable mtime T says that every
  round that started before T had completed (its sync returned);
- a torn file therefore belongs to a round that started at T or later, and the envelope such
  a round writes has an mtime >= T.  Envelopes written since T - ``RECENT_MARGIN`` (room for
  a clock step) are checked: the envelope must parse and, when it records a CRC (a message
  that was in memory), the message must have the size and CRC32 it records.  A spilled
  message needs no check: the round fsyncs it by name before its rename.  One that fails is
  a torn commit, never acknowledged; ``spool.Spool.recover`` moves it to corrupt/;
- older envelopes are parsed, as ever, and nothing else: a million queued recover as fast;
- the recent commits found whole are made durable before the first round can move the
  checkpoint past them (``keep_durable``): if only the server died, not the system, they may
  be whole in the page cache and not on disk.

A queue loaded in the background (``recoverysteps``: the server accepts mail while it reads a big
queue) lets rounds move the checkpoint before recovery has checked the envelopes it found:
``pin`` records recovery's window in ``.recovering`` first, durable, and the next start-up
checks from the earlier of the two (``recent_since``) until ``unpin`` (the load is complete and
what it found whole is durable).  A crash in the middle of such a load thus checks again what
the crash before it may have torn.

A spool without ``.synced`` was written by code that synced data before names: it is trusted
as a whole, and ``ensure`` creates the checkpoint, durable, before any round runs.  This
relies on what ext4 and XFS do: a file's mtime is that of its last write, and metadata
changes become durable in the order they were made (the spool's removals assume it too).
"""

from __future__ import annotations

import os
import zlib

from mxbackup.queue import rounds
from mxbackup.queue.envelope import EnvelopeError
from mxbackup.queue.rounds import CHECKPOINT

RECENT_MARGIN = 2.0  # seconds before the checkpoint from which envelopes are checked
PIN = ".recovering"  # recovery's window while a load in the background runs


def ensure(root: str) -> None:
    """Create the checkpoint if it is missing, durable (the caller fsyncs ``root``)."""
    path = os.path.join(root, CHECKPOINT)
    if not os.path.exists(path):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def recent_since(root: str) -> float | None:
    """The time from which an envelope may belong to a round that did not complete (the
    checkpoint's mtime less the margin, or the pinned window if earlier: ``pin``), or None
    without a checkpoint (nothing to check)."""
    try:
        since = os.stat(os.path.join(root, CHECKPOINT)).st_mtime - RECENT_MARGIN
    except FileNotFoundError:
        return None
    pinned = _pinned(root)
    return min(since, pinned) if pinned is not None else since


def _pinned(root: str) -> float | None:
    """The window ``pin`` recorded; None without one (or an unreadable one, which only a
    crash while it was written leaves: before any round ran, so the checkpoint covers it)."""
    try:
        with open(os.path.join(root, PIN), "rb") as f:
            return float(f.read(64))
    except (OSError, ValueError):
        return None


def pin(root: str, recent: float | None) -> None:
    """Record recovery's window (``recent_since`` as recovery found it), durable, before any
    round runs; nothing without one (no checkpoint: the spool is trusted as a whole, and
    rounds from now on are covered by the checkpoint ``ensure`` made)."""
    if recent is None:
        return
    path = os.path.join(root, PIN)
    temporary = path + ".tmp"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, repr(recent).encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.rename(temporary, path)
    rounds.fsync_path(root)


def unpin(root: str) -> None:
    """The load is complete and what it found whole is durable: the checkpoint alone says
    again what to check (not synced: a pin that outlives a power cut only checks more)."""
    try:
        os.unlink(os.path.join(root, PIN))
    except FileNotFoundError:
        pass


def written_since(dir_fd: int, name: str, since: float | None) -> bool:
    """Whether the file ``name`` in ``dir_fd`` was last written at ``since`` or later."""
    if since is None:
        return False
    try:
        return os.stat(name, dir_fd=dir_fd).st_mtime >= since
    except OSError:
        return False


def check_commit(message_path: str, size: int, crc: int | None) -> None:
    """Raise EnvelopeError unless the message has the ``size`` and CRC32 its envelope
    records (nothing to check when it records none)."""
    if crc is None:
        return
    with open(message_path, "rb") as f:
        data = f.read()
    if len(data) != size:
        raise EnvelopeError(f"message is {len(data)} octets, its envelope says {size}")
    if zlib.crc32(data) != crc:
        raise EnvelopeError("message does not match the CRC32 its envelope records")


def keep_durable(root: str, qids: list[str], sync: str) -> None:
    """Make the recent commits recovery kept (``new/<id>``, ``env/<id>``) durable (``sync``:
    the spool's mode)."""
    if qids:
        paths = [os.path.join(root, sub, qid) for qid in qids for sub in ("new", "env")]
        make_durable(root, paths, sync)


def make_durable(root: str, paths: list[str], sync: str) -> None:
    """Write back ``paths`` (files under ``root``) as the ``sync`` mode does: one syncfs of
    the file system, or an fsync of each."""
    if sync == "syncfs" and rounds.SYNCFS is not None:
        fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
        try:
            rounds.SYNCFS(fd)
        finally:
            os.close(fd)
        return
    for path in paths:
        try:
            rounds.fsync_path(path)
        except FileNotFoundError:  # removed since (delivered while a big queue loaded)
            continue
