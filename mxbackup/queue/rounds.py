"""The spool's rounds: the only code that writes, fsyncs and renames queue files (the try
log, ``tries``, a hint appended by the server and never synced, and the snapshot a clean stop
leaves, ``snapshot``, a cache of the envelope files, are the exceptions).

A round is the work of many changes to the spool (``RoundOp``: plain data) made durable once
(group commit); ``spool.Spool`` says what each one's outcome means.  Rounds run in the *spool
process*, a child of the server started by ``spoolproc`` whose program is ``spoolchild`` (it
gathers into one round the requests that wait for it), so nothing here imports Twisted: the
child stays small (its memory counts) and starts fast.  In tests, rounds also run in the
caller's process.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import platform
import struct
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

_STAGING = ThreadPoolExecutor(max_workers=8, thread_name_prefix="spool-stage")
# In the spool root: its mtime is set as each round starts (see ``run_round``).
CHECKPOINT = ".synced"
FRAME = struct.Struct(">I")


@dataclass(frozen=True)
class RoundOp:
    """What a round needs of one change: plain data, so a round can run in another process
    (see ``spoolproc``)."""

    kind: str
    qid: str
    tmp: str = ""
    data: bytes = b""
    message: bytes | None = None
    prefix: bytes = b""  # header fields to put above a spilled message (ARC, A-R)


def _prepend(path: str, prefix: bytes) -> None:
    """Put ``prefix`` above the spilled message at ``path``: a new file (prefix, then the
    message copied in the kernel) renamed over it, both in tmp/, before anything is durable
    or visible.  Only messages larger than ``incoming.SPILL`` whose checks add header fields
    at the end of data (DKIM/ARC) pay this copy, in the spool process."""
    fresh = path + ".prefixed"
    try:
        with open(fresh, "xb") as out, open(path, "rb") as src:
            out.write(prefix)
            out.flush()
            size = os.fstat(src.fileno()).st_size
            offset = 0
            while offset < size:
                sent = os.sendfile(out.fileno(), src.fileno(), offset, size - offset)
                if sent == 0:
                    raise OSError(errno.EIO, "short copy", path)
                offset += sent
        os.rename(fresh, path)
    except OSError:
        unlink_quietly(fresh)
        raise


def fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_new(path: str, data: bytes, durable: bool) -> None:
    """Create ``path`` with ``data``; fsync it when ``durable`` (else a later sync covers it).
    A partial file is removed."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if durable:
            os.fsync(fd)
    except OSError:
        os.close(fd)
        unlink_quietly(path)
        raise
    os.close(fd)


def _kernel_reports_syncfs_errors() -> bool:
    """Linux reports write-back errors through syncfs(2) since 5.8; before, a failed write
    could go unnoticed, so syncfs is not offered there."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        major, minor = (int(x) for x in platform.release().split(".")[:2])
    except ValueError:
        return False
    return (major, minor) >= (5, 8)


def _load_syncfs() -> Callable[[int], None] | None:
    """``syncfs(2)`` from the C library, or None where there is none or it cannot be trusted
    to report errors."""
    if not _kernel_reports_syncfs_errors():
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        call = libc.syncfs
    except (OSError, AttributeError):
        return None

    def syncfs(fd: int) -> None:
        if call(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"syncfs: {os.strerror(err)}")

    return syncfs


SYNCFS = _load_syncfs()
SYNC_MODES = ("syncfs", "fsync") if SYNCFS is not None else ("fsync",)


def unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def undo(root: str, op: RoundOp) -> None:
    """Remove what a round may have left of ``op`` when its outcome is unknown (the spool
    process died or failed in the middle): a commit's files wherever they got to, an
    update's new envelope in tmp/.  The client had no 250; a crash before this is covered by
    recovery (the message is then kept: at worst a duplicate, never a loss)."""
    _Round(root, "fsync")._unwrite(op)


def run_round(root: str, sync: str, ops: list[RoundOp]) -> list[OSError | None]:
    """The spool process (or, in tests, wherever the runner puts it): the work of many operations,
    made durable once; an OSError or None for each.

    0. start: syncfs: open the spool root, the file syncfs will use, before any write, so
       syncfs reports every write-back error of the round (errseq); set the checkpoint's mtime
       (``CHECKPOINT``: every earlier round has completed);
    1. write: message files and envelopes into tmp/;
    2. make their data durable: fsync each, in parallel (concurrent fsyncs share journal
       commits), or one syncfs -- but a syncfs round that replaces no envelope (no
       ``update``) skips this one: a crash before step 4 may then tear only commits that got
       no 250, which recovery tells apart (``checkpoint``);
    3. rename them into new/ and env/; unlink removed messages and their envelopes;
    4. make the names durable: fsync new/ and env/, or one syncfs."""
    return _Round(root, sync).run(ops)


class _Round:
    def __init__(self, root: str, sync: str) -> None:
        self.root = root
        self.sync = sync
        self._fd = -1  # syncfs: the spool root, opened when the round starts
        self._sync_data = sync == "syncfs"  # step 2 as its own syncfs (else: one sync)

    def path(self, sub: str, name: str) -> str:
        return os.path.join(self.root, sub, name)

    def run(self, ops: list[RoundOp]) -> list[OSError | None]:
        try:
            self._start(ops)
        except OSError as e:  # nothing written yet (a spilled message: taken back)
            for op in ops:
                self._unwrite(op)
            return [e] * len(ops)
        try:
            results: list[OSError | None] = [None] * len(ops)
            writes = [i for i, op in enumerate(ops) if op.kind != "remove"]
            self._write_all(ops, writes, results)
            renamed = [False] * len(ops)
            for i, op in enumerate(ops):
                if results[i] is None:
                    results[i], renamed[i] = self._rename(op)
            if any(renamed):
                self._sync_names(ops, renamed, results)
            return results
        finally:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def _start(self, ops: list[RoundOp]) -> None:
        """Step 0: open the file syncfs will use before anything is written (syncfs reports
        the write-back errors of the file system since that file was opened: Linux >= 5.8),
        then set the checkpoint (fsync mode too: it keeps recovery's window short after a
        change of mode); decide whether the round needs a sync between its writes and its
        renames."""
        if self.sync == "syncfs":
            self._fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
        checkpointed = self._checkpoint()
        if self.sync == "syncfs":
            self._sync_data = not checkpointed or any(op.kind == "update" for op in ops)

    def _checkpoint(self) -> bool:
        """Set ``CHECKPOINT``'s mtime to now: durable with this round's sync (or earlier),
        it tells recovery that every round started before now has completed.  False if it
        could not be set (the round then syncs its data before its renames, needing no
        checkpoint); a missing one is created again, for the next rounds."""
        path = os.path.join(self.root, CHECKPOINT)
        try:
            os.utime(path)
            return True
        except OSError as e:
            if self.sync != "syncfs":
                return False  # fsync mode syncs data before names: it needs no checkpoint
            print(f"mxbackup spool: {path}: {e}; creating it", file=sys.stderr, flush=True)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
        except OSError:
            pass
        return False

    def _write_all(self, ops: list[RoundOp], writes: list[int], results: list) -> None:
        """Steps 1 and 2: the files of ``writes`` in tmp/, their data durable (syncfs: unless
        one sync after the renames will do, see ``run_round``)."""
        durable = self.sync == "fsync"
        if durable and len(writes) > 1:
            errors = list(_STAGING.map(lambda i: self._write(ops[i], True), writes))
        else:
            errors = [self._write(ops[i], durable) for i in writes]
        for i, error in zip(writes, errors, strict=True):
            results[i] = error
        if not self._sync_data or all(e is not None for e in errors):
            return
        # The files' data must be on disk before any name points to it: an envelope replaced
        # by one whose data is lost would lose an acknowledged message.
        try:
            self._sync()
        except OSError as e:
            for i in writes:
                if results[i] is None:
                    results[i] = e
                    self._unwrite(ops[i])

    def _sync_names(self, ops: list[RoundOp], renamed: list[bool], results: list) -> None:
        """Step 4: the renamed names durable (with their data, if step 2 was skipped); if that
        fails, none of them is acknowledged and new messages are taken back (the client gets
        a 4xx)."""
        try:
            self._sync()
        except OSError as e:
            for i, op in enumerate(ops):
                if renamed[i]:
                    results[i] = e
                    if op.kind == "commit":
                        self._discard(op.qid)

    def _write(self, op: RoundOp, durable: bool) -> OSError | None:
        try:
            if op.kind == "commit":
                message = self.path("tmp", op.qid)
                if op.message is not None:
                    _write_new(message, op.message, durable)
                else:  # spilled: written and closed while it arrived; fsync'd by name in
                    # both modes, so a write-back error an earlier syncfs already reported
                    # (and consumed) cannot pass unseen
                    if op.prefix:
                        _prepend(message, op.prefix)
                    fsync_path(message)
            _write_new(op.tmp, op.data, durable)
        except OSError as e:
            self._unwrite(op)
            return e
        return None

    def _unwrite(self, op: RoundOp) -> None:
        """Remove what ``_write`` left of a failed operation."""
        if op.kind == "commit":
            self._discard(op.qid)
        elif op.tmp:  # an update's new envelope (a removal wrote nothing)
            unlink_quietly(op.tmp)

    def _rename(self, op: RoundOp) -> tuple[OSError | None, bool]:
        """Put ``op`` in place; the error, and whether a name changed that the next sync
        must make durable."""
        renamed = False
        try:
            if op.kind == "commit":
                os.rename(self.path("tmp", op.qid), self.path("new", op.qid))
                renamed = True
                os.rename(op.tmp, self.path("env", op.qid))
            elif op.kind == "update":
                os.rename(op.tmp, self.path("env", op.qid))
                renamed = True
            else:
                unlink_quietly(self.path("env", op.qid))
                unlink_quietly(self.path("new", op.qid))
                renamed = True
        except OSError as e:
            self._unwrite(op)
            return e, False
        return None, renamed

    def _sync(self) -> None:
        if self.sync == "syncfs":
            assert SYNCFS is not None and self._fd >= 0
            SYNCFS(self._fd)
        else:
            fsync_dir(self.path("new", ""))
            fsync_dir(self.path("env", ""))

    def _discard(self, qid: str) -> None:
        for path in (
            self.path("env", qid),
            self.path("tmp", qid + ".env"),
            self.path("new", qid),
            self.path("tmp", qid),
        ):
            try:
                unlink_quietly(path)
            except OSError:
                print(f"mxbackup spool: could not remove {path}", file=sys.stderr, flush=True)
