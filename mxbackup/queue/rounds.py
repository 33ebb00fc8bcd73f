"""The spool's rounds: the only code that writes, fsyncs and renames queue files (the try
log, ``tries``, a hint appended by the server and never synced, is the one exception).

A round is the work of many changes to the spool (``RoundOp``: plain data) made durable once
(group commit); ``spool.Spool`` gathers them and says what each one's outcome means.  Rounds
run in the *spool process*, a child of the server started by ``spoolproc`` that runs this
module's ``main`` as its program (``python -c "...mxbackup.queue.rounds import main..." PID``), so
nothing here imports Twisted: the child stays small (its memory counts) and starts fast.  In
tests, rounds also run in the caller's process.

The child reads requests on its stdin and answers on its stdout, one at a time, in order.  A
frame is a 4-byte big-endian length and a pickle: the request is the arguments of a
``run_round``, the answer ``("ok", result)`` or ``("error", text)``.  Both ends are this
program, over a pipe only they hold.  The child dies with its parent
(``PR_SET_PDEATHSIG``), ignores SIGINT, SIGHUP and SIGTERM (signals to the whole process
group), and otherwise ends when its stdin closes, after the round in hand.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import pickle
import platform
import signal
import struct
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

_STAGING = ThreadPoolExecutor(max_workers=8, thread_name_prefix="spool-stage")
# In the spool root: its mtime is set as each round starts (see ``run_round``).
CHECKPOINT = ".synced"
FRAME = struct.Struct(">I")
_PR_SET_PDEATHSIG = 1


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
    or visible.  Only messages larger than ``spool.SPILL`` whose checks add header fields
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


# -- the spool process's program --------------------------------------------------------------
def _read_exact(stream: BinaryIO, size: int) -> bytes | None:
    chunks, left = [], size
    while left:
        chunk = stream.read(left)
        if not chunk:
            return None
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


PIPE_SIZE = 1 << 20  # octets: a round of 50 commits of 5 KB, or ten of 100 KB, in one write


def widen_pipe(fd: int, size: int = PIPE_SIZE) -> int:
    """Make the pipe at ``fd`` hold ``size`` octets (or the most the system allows an
    unprivileged process: ``/proc/sys/fs/pipe-max-size``); its new size, or 0 if it is no pipe
    or cannot grow.  With the default 64 KB, a round's request of more than 64 KB reached
    the spool process a pipe-full per turn of the server's busy reactor: at 50 clients the
    spool process waited for its requests ~40 % of the time."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is None:
        return 0
    try:
        with open("/proc/sys/fs/pipe-max-size") as f:
            size = min(size, int(f.read()))
    except (OSError, ValueError):
        pass
    try:
        return fcntl.fcntl(fd, set_size, size)
    except OSError:
        return 0


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """Answer requests until stdin closes (or nobody reads the answers any more)."""
    while True:
        header = _read_exact(stdin, FRAME.size)
        if header is None:
            return
        body = _read_exact(stdin, FRAME.unpack(header)[0])
        if body is None:
            return
        try:
            reply: tuple[str, Any] = ("ok", run_round(*pickle.loads(body)))
        except Exception as e:  # noqa: BLE001 - reported to the parent, which fails the round
            reply = ("error", f"{type(e).__name__}: {e}")
        payload = pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
        try:
            stdout.write(FRAME.pack(len(payload)) + payload)
            stdout.flush()
        except BrokenPipeError:
            return  # the server is gone (it stopped while this round ran): nobody waits


def _die_with_parent(parent: int) -> None:
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            print("mxbackup spool: prctl(PR_SET_PDEATHSIG) failed", file=sys.stderr, flush=True)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def main(argv: list[str]) -> None:
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    _die_with_parent(int(argv[1]))
    for fd in (0, 1):  # the requests, and the answers (both ends share each pipe's buffer)
        widen_pipe(fd)
    serve(sys.stdin.buffer, sys.stdout.buffer)
    os._exit(0)  # no flush of sys.stdout at exit: its reader may be gone
