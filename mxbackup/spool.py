"""The maildir-backed queue: the only module that fsyncs or renames spool paths.

Layout under the spool root::

    tmp/        messages being received and envelopes being written (never trusted)
    new/<id>    committed messages, Maildir style, one file per transaction, never rewritten;
                stored in wire form (CRLF line ends, dot-stuffing removed), our Received first
    env/<id>    the message's envelope (versioned JSON), replaced atomically on each change
    cur/        unused, present so the tree is a valid Maildir
    corrupt/    envelopes that could not be read, with their message, for the operator

Commit protocol (``commit``): the message and its envelope are written to tmp/, the message is
renamed into new/, the envelope into env/, and all of it is made durable: file data and
directory entries.  Only then does the Deferred fire, and only then does the SMTP side say 250.

Every change to the spool (commits, envelope updates, removals) goes through *rounds*: what
arrives while a round is on the disk waits for the next one, and a round does the work of all
its operations with one durability step (group commit), away from the reactor, which never
waits on the disk: ``run_round`` runs in the spool process (``spoolproc``; in tests, wherever
the injected runner puts it).  The step is either ``fsync`` (each file, then each directory: the
classic discipline) or ``syncfs`` (one ``syncfs(2)`` for the spool's file system, which writes
back and commits everything dirty on it: the same guarantee for all the round's files at the
cost of one journal commit; the default on Linux).

A message is live iff both ``new/<id>`` and ``env/<id>`` exist.  A crash at any instant leaves
either both (committed: the client may or may not have had its 250, it is kept), or one or
none (the client never had a 250: ``recover`` removes the leftover).  Removal unlinks the
envelope first, so a crash in the middle leaves a message without envelope, which ``recover``
removes as already done.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import dataclasses
import errno
import os
import platform
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from .envelope import Envelope, EnvelopeError, new_queue_id

log = Logger()

RunInThread = Callable[..., defer.Deferred]
_STAGING = ThreadPoolExecutor(max_workers=8, thread_name_prefix="spool-stage")
FREE_SPACE_TTL = 0.2  # seconds between two statvfs of the spool
SUBDIRS = ("tmp", "new", "cur", "env", "corrupt")


def is_out_of_space(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_path(path: str) -> None:
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
        _unlink_quietly(path)
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


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


SPILL = 256 * 1024  # a message larger than this is written to tmp/ while it arrives


class Incoming:
    """A message being received.  Up to ``SPILL`` octets stay in memory, so the reactor never
    waits on the file system; larger messages spill to ``tmp/`` as they arrive (writes to the
    page cache).  Creation, the rest of the writing and the fsync happen in the commit's
    round.  A write error is kept and reported at commit."""

    def __init__(self, spool: Spool, queue_id: str) -> None:
        self.id = queue_id
        self.path = spool.path("tmp", queue_id)
        self.size = 0
        self.error: OSError | None = None
        self._chunks: list[bytes] = []
        self._file: Any = None

    def write(self, data: bytes) -> None:
        if self.error is not None:
            return
        self.size += len(data)
        if self._file is None:
            self._chunks.append(data)
            if self.size > SPILL:
                self._spill()
            return
        try:
            self._file.write(data)
        except OSError as e:
            self.error = e

    def _spill(self) -> None:
        try:
            self._file = open(self.path, "xb", buffering=1 << 16)  # noqa: SIM115
            self._file.writelines(self._chunks)
        except OSError as e:
            self.error = e
        self._chunks = []

    def seal(self) -> bytes | None:
        """Stop writing (reactor thread, at commit): the message's bytes while it is in
        memory, or None once a spilled file is flushed and closed (the round fsyncs it by
        name).  Raises the write error kept since the message arrived."""
        if self.error is not None:
            raise self.error
        if self._file is None:
            data, self._chunks = b"".join(self._chunks), []
            return data
        f, self._file = self._file, None
        try:
            f.flush()
        finally:
            f.close()
        return None

    def abort(self) -> None:
        self._chunks = []
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
        _unlink_quietly(self.path)


@dataclass(frozen=True)
class RoundOp:
    """What a round needs of one change: plain data, so a round can run in another process
    (see ``spoolproc``)."""

    kind: str
    qid: str
    tmp: str = ""
    data: bytes = b""
    message: bytes | None = None


@dataclass
class _Pending:
    """A change waiting for its round, and who waits for it."""

    op: RoundOp
    done: defer.Deferred
    incoming: Incoming | None = None


class Spool:
    def __init__(
        self,
        root: str,
        run_in_thread: RunInThread,
        clock: Callable[[], float] = time.time,
        sync: str = "",
    ) -> None:
        """``sync``: "syncfs" or "fsync" (see the module's docstring); default: syncfs where
        the system has it."""
        self.root = os.path.abspath(root)
        self._run = run_in_thread
        self._clock = clock
        self.sync = sync or SYNC_MODES[0]
        if self.sync not in SYNC_MODES:
            raise ValueError(f"spool sync must be one of {', '.join(SYNC_MODES)}")
        self._pending: list[_Pending] = []
        self._committing = False
        self._free, self._free_at = 0, -FREE_SPACE_TTL
        self._serial = 0

    # -- paths ---------------------------------------------------------------------------
    def path(self, sub: str, name: str = "") -> str:
        return os.path.join(self.root, sub, name) if name else os.path.join(self.root, sub)

    def message_path(self, queue_id: str) -> str:
        return self.path("new", queue_id)

    def open(self) -> None:
        """Create the directory tree (synchronously, at start-up)."""
        for sub in SUBDIRS:
            os.makedirs(self.path(sub), mode=0o700, exist_ok=True)
        _fsync_dir(self.root)

    def free_space(self, fresh: bool = False) -> int:
        """Octets free for us on the spool's file system; measured at most every
        FREE_SPACE_TTL seconds (a statvfs per MAIL command is measurable at high rates), less
        what was queued since.  ``fresh`` measures now: a caller about to refuse for lack of
        space asks again, so acceptance resumes the moment space returns."""
        now = self._clock()
        if fresh or not (0 <= now - self._free_at < FREE_SPACE_TTL):
            st = os.statvfs(self.root)
            self._free, self._free_at = st.f_bavail * st.f_frsize, now
        return self._free

    # -- the three changes -----------------------------------------------------------------
    def incoming(self) -> Incoming:
        return Incoming(self, new_queue_id(self._clock()))

    def commit(self, incoming: Incoming, envelope: Envelope) -> defer.Deferred:
        """Make ``incoming`` and ``envelope`` durable.  Fires with None when the message is
        in the queue (file, envelope and directory entries on disk), or fails with the
        OSError that prevented it, having removed every trace of the message."""
        self._free -= incoming.size
        try:
            message = incoming.seal()
        except OSError as e:
            incoming.abort()
            return defer.fail(e)
        op = RoundOp("commit", incoming.id, self.path("tmp", incoming.id + ".env"))
        return self._submit(op, envelope, incoming, message)

    def update(self, envelope: Envelope) -> defer.Deferred:
        """Replace the envelope atomically and durably."""
        self._serial += 1
        tmp = self.path("tmp", f"{envelope.id}.env.{os.getpid()}.{self._serial}")
        return self._submit(RoundOp("update", envelope.id, tmp), envelope)

    def remove(self, queue_id: str) -> defer.Deferred:
        """Remove a finished message: envelope and file, made durable with the round.  A crash
        that keeps only one of the two leaves an envelope without message or a message
        without envelope, both of which ``recover`` removes as done; one that keeps both
        (the round was not on disk yet) delivers the message again: a duplicate, never a
        loss."""
        return self._submit(RoundOp("remove", queue_id))

    # -- rounds ----------------------------------------------------------------------------
    def _submit(
        self,
        op: RoundOp,
        envelope: Envelope | None = None,
        incoming: Incoming | None = None,
        message: bytes | None = None,
    ) -> defer.Deferred:
        if envelope is not None:
            # Serialised now, as it is at this moment: the caller may go on changing the
            # object while the round runs.
            op = dataclasses.replace(op, data=envelope.to_json(), message=message)
        pending = _Pending(op, defer.Deferred(), incoming)
        self._pending.append(pending)
        if not self._committing:
            self._next_round()
        return pending.done

    def _next_round(self) -> None:
        if not self._pending:
            self._committing = False
            return
        self._committing = True
        pending, self._pending = self._pending, []
        d = self._run(run_round, self.root, self.sync, [p.op for p in pending])

        def done(results: list[OSError | None]) -> None:
            for p, error in zip(pending, results, strict=True):
                if error is None:
                    p.done.callback(None)
                else:
                    p.done.errback(error)

        def failed(failure: Any) -> None:  # the worker itself failed: nothing is trusted
            for p in pending:
                if p.incoming is not None:
                    p.incoming.abort()
                p.done.errback(failure)

        d.addCallbacks(done, failed)
        d.addBoth(lambda _: self._next_round())

    # -- start-up ------------------------------------------------------------------------
    def recover(self) -> list[Envelope]:
        """Synchronously, before listening: finish or undo what a crash left, and return
        the envelope of every live message (sorted by queue id, i.e. by arrival)."""
        self.open()
        for name in os.listdir(self.path("tmp")):
            _unlink_quietly(self.path("tmp", name))
        messages = set(os.listdir(self.path("new")))
        envelopes = set(os.listdir(self.path("env")))
        for qid in sorted(envelopes - messages):
            log.warn("spool recover: removing envelope {id} without message", id=qid)
            _unlink_quietly(self.path("env", qid))
        for qid in sorted(messages - envelopes):
            log.warn("spool recover: removing message {id} without envelope", id=qid)
            _unlink_quietly(self.path("new", qid))
        live: list[Envelope] = []
        for qid in sorted(messages & envelopes):
            try:
                with open(self.path("env", qid), "rb") as f:
                    env = Envelope.from_json(f.read())
                if env.id != qid:
                    raise EnvelopeError(f"envelope names {env.id!r}")
            except (OSError, EnvelopeError) as e:
                log.error("spool recover: {id} moved to corrupt/: {e}", id=qid, e=str(e))
                os.rename(self.path("env", qid), self.path("corrupt", qid + ".env"))
                os.rename(self.path("new", qid), self.path("corrupt", qid))
                continue
            live.append(env)
        for sub in ("tmp", "new", "env", "corrupt"):
            _fsync_dir(self.path(sub))
        return live


def run_round(root: str, sync: str, ops: list[RoundOp]) -> list[OSError | None]:
    """A worker thread or the spool process (``spoolproc``): the work of many operations,
    made durable once; an OSError or None for each.

    1. write: message files and envelopes into tmp/;
    2. make their data durable: fsync each, in parallel (concurrent fsyncs share journal
       commits), or one syncfs;
    3. rename them into new/ and env/; unlink removed messages and their envelopes;
    4. make the names durable: fsync new/ and env/, or one syncfs."""
    return _Round(root, sync).run(ops)


class _Round:
    def __init__(self, root: str, sync: str) -> None:
        self.root = root
        self.sync = sync

    def path(self, sub: str, name: str) -> str:
        return os.path.join(self.root, sub, name)

    def run(self, ops: list[RoundOp]) -> list[OSError | None]:
        durable = self.sync == "fsync"
        results: list[OSError | None] = [None] * len(ops)
        renamed = [False] * len(ops)
        writes = [i for i, op in enumerate(ops) if op.kind != "remove"]
        if durable and len(writes) > 1:
            errors = list(_STAGING.map(lambda i: self._write(ops[i], True), writes))
        else:
            errors = [self._write(ops[i], durable) for i in writes]
        for i, error in zip(writes, errors, strict=True):
            results[i] = error
        if not durable and any(e is None for e in errors):
            # syncfs: the files' data must be on disk before any name points to it, or a
            # crash could leave a truncated message under a live name.
            try:
                self._sync()
            except OSError as e:
                for i in writes:
                    if results[i] is None:
                        results[i] = e
                        self._unwrite(ops[i])
        for i, op in enumerate(ops):
            if results[i] is None:
                results[i], renamed[i] = self._rename(op)
        if any(renamed):
            try:
                self._sync()
            except OSError as e:
                for i, op in enumerate(ops):
                    if renamed[i]:
                        results[i] = e
                        if op.kind == "commit":
                            self._discard(op.qid)
        return results

    def _write(self, op: RoundOp, durable: bool) -> OSError | None:
        try:
            if op.kind == "commit":
                message = self.path("tmp", op.qid)
                if op.message is not None:
                    _write_new(message, op.message, durable)
                elif durable:  # spilled: written and closed while it arrived
                    _fsync_path(message)
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
            _unlink_quietly(op.tmp)

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
                _unlink_quietly(self.path("env", op.qid))
                _unlink_quietly(self.path("new", op.qid))
                renamed = True
        except OSError as e:
            self._unwrite(op)
            return e, False
        return None, renamed

    def _sync(self) -> None:
        if self.sync == "syncfs":
            assert SYNCFS is not None
            fd = os.open(self.root, os.O_RDONLY | os.O_DIRECTORY)
            try:
                SYNCFS(fd)
            finally:
                os.close(fd)
        else:
            _fsync_dir(self.path("new", ""))
            _fsync_dir(self.path("env", ""))

    def _discard(self, qid: str) -> None:
        for path in (
            self.path("env", qid),
            self.path("tmp", qid + ".env"),
            self.path("new", qid),
            self.path("tmp", qid),
        ):
            try:
                _unlink_quietly(path)
            except OSError:
                log.error("spool: could not remove {path}", path=path)
