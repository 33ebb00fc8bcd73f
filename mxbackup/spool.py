"""The maildir-backed queue: the only module that fsyncs or renames spool paths.

Layout under the spool root::

    tmp/        messages being received and envelopes being written (never trusted)
    new/<id>    committed messages, Maildir style, one file per transaction, never rewritten;
                stored in wire form (CRLF line ends, dot-stuffing removed), our Received first
    env/<id>    the message's envelope (versioned JSON), replaced atomically on each change
    cur/        unused, present so the tree is a valid Maildir
    corrupt/    envelopes that could not be read, with their message, for the operator

Commit protocol (``commit``): the message file is fsync'd, the envelope is written to tmp/ and
fsync'd, the message is renamed into new/, the envelope into env/, and both directories are
fsync'd.  Only then does the Deferred fire, and only then does the SMTP side say 250.  Many
concurrent transactions share one round of this work (group commit) in a worker thread, so
the reactor never waits on the disk.

A message is live iff both ``new/<id>`` and ``env/<id>`` exist.  A crash at any instant leaves
either both (committed: the client may or may not have had its 250, it is kept), or one or
none (the client never had a 250: ``recover`` removes the leftover).  Removal unlinks the
envelope first, so a crash in the middle leaves a message without envelope, which ``recover``
removes as already done.
"""

from __future__ import annotations

import errno
import os
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from .envelope import Envelope, EnvelopeError, new_queue_id

log = Logger()

RunInThread = Callable[..., defer.Deferred]
_STAGING = ThreadPoolExecutor(max_workers=8, thread_name_prefix="spool-stage")
SUBDIRS = ("tmp", "new", "cur", "env", "corrupt")


def is_out_of_space(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


def _fsync_dir(path: str) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_durably(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.fsync(fd)
    finally:
        os.close(fd)


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


SPILL = 256 * 1024  # a message larger than this is written to tmp/ while it arrives


class Incoming:
    """A message being received.  Up to ``SPILL`` octets stay in memory, so the reactor never
    waits on the file system; larger messages spill to ``tmp/`` as they arrive (writes to the
    page cache).  Creation, the rest of the writing and the fsync happen in ``Spool.commit``'s
    worker thread.  A write error is kept and reported at commit."""

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

    def _finish(self) -> None:
        """Write what is in memory, fsync and close (worker thread)."""
        if self.error is not None:
            raise self.error
        if self._file is None:
            _write_durably(self.path, b"".join(self._chunks))
            self._chunks = []
            return
        f, self._file = self._file, None
        try:
            f.flush()
            os.fsync(f.fileno())
        finally:
            f.close()

    def abort(self) -> None:
        self._chunks = []
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
        _unlink_quietly(self.path)


class Spool:
    def __init__(
        self,
        root: str,
        run_in_thread: RunInThread,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.root = os.path.abspath(root)
        self._run = run_in_thread
        self._clock = clock
        self._pending: list[tuple[Incoming, Envelope, defer.Deferred]] = []
        self._committing = False

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

    def free_space(self) -> int:
        st = os.statvfs(self.root)
        return st.f_bavail * st.f_frsize

    # -- acceptance ----------------------------------------------------------------------
    def incoming(self) -> Incoming:
        return Incoming(self, new_queue_id(self._clock()))

    def commit(self, incoming: Incoming, envelope: Envelope) -> defer.Deferred:
        """Make ``incoming`` and ``envelope`` durable.  Fires with None when the message is
        in the queue (file, envelope and directory entries fsync'd), or fails with the
        OSError that prevented it, having removed every trace of the message."""
        d: defer.Deferred = defer.Deferred()
        self._pending.append((incoming, envelope, d))
        if not self._committing:
            self._next_round()
        return d

    def _next_round(self) -> None:
        if not self._pending:
            self._committing = False
            return
        self._committing = True
        batch, self._pending = self._pending, []
        work = [(inc, env) for inc, env, _ in batch]
        d = self._run(self._commit_batch, work)

        def done(results: list[OSError | None]) -> None:
            for (_, _, waiter), error in zip(batch, results, strict=True):
                if error is None:
                    waiter.callback(None)
                else:
                    waiter.errback(error)

        def failed(failure: Any) -> None:  # the worker itself failed: nothing is trusted
            for inc, _, waiter in batch:
                inc.abort()
                waiter.errback(failure)

        d.addCallbacks(done, failed)
        d.addBoth(lambda _: self._next_round())

    def _stage(self, item: tuple[Incoming, Envelope]) -> OSError | None:
        """Message and envelope written and fsync'd in tmp/ (one of a round's parallel jobs)."""
        inc, env = item
        try:
            inc._finish()
            _write_durably(self.path("tmp", inc.id + ".env"), env.to_json())
        except OSError as e:
            self._discard(inc.id)
            return e
        return None

    def _commit_batch(self, work: list[tuple[Incoming, Envelope]]) -> list[OSError | None]:
        """Worker thread: one round of the commit protocol for many messages.  The files are
        written and fsync'd in parallel (concurrent fsyncs share the file system's journal
        commits), then renamed, then each directory is fsync'd once for the whole round."""
        if len(work) == 1:
            results: list[OSError | None] = [self._stage(work[0])]
        else:
            results = list(_STAGING.map(self._stage, work))
        staged = [i for i, error in enumerate(results) if error is None]
        renamed: list[int] = []
        for i in staged:
            qid = work[i][0].id
            try:
                os.rename(self.path("tmp", qid), self.path("new", qid))
                os.rename(self.path("tmp", qid + ".env"), self.path("env", qid))
                renamed.append(i)
            except OSError as e:
                results[i] = e
                self._discard(qid)
        if renamed:
            try:
                _fsync_dir(self.path("new"))
                _fsync_dir(self.path("env"))
            except OSError as e:
                for i in renamed:
                    results[i] = e
                    self._discard(work[i][0].id)
        return results

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

    # -- state changes (used by the delivery side) ---------------------------------------
    def update(self, envelope: Envelope) -> defer.Deferred:
        """Replace the envelope atomically and durably."""
        return self._run(self._replace_envelope, envelope)

    def _replace_envelope(self, envelope: Envelope) -> None:
        tmp = self.path("tmp", f"{envelope.id}.env.{os.getpid()}.{time.monotonic_ns()}")
        try:
            _write_durably(tmp, envelope.to_json())
            os.rename(tmp, self.path("env", envelope.id))
        except OSError:
            _unlink_quietly(tmp)
            raise
        _fsync_dir(self.path("env"))

    def remove(self, queue_id: str) -> defer.Deferred:
        """Remove a finished message: envelope first (the commit marker), then the file."""
        return self._run(self._remove, queue_id)

    def _remove(self, queue_id: str) -> None:
        _unlink_quietly(self.path("env", queue_id))
        _fsync_dir(self.path("env"))
        _unlink_quietly(self.path("new", queue_id))

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
