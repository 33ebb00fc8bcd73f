"""The maildir-backed queue: what is in it, and how each change becomes durable.

The writing, fsyncs and renames of a change happen in ``rounds`` (in the spool process);
this module gathers the changes, recovers after a crash and answers for free space.

Layout under the spool root::

    tmp/        messages being received and envelopes being written (never trusted)
    new/<id>    committed messages, Maildir style, one file per transaction, never rewritten;
                stored in wire form (CRLF line ends, dot-stuffing removed), our Received first
    env/<id>    the message's envelope (versioned JSON), replaced atomically on each change
    cur/        unused, present so the tree is a valid Maildir
    corrupt/    envelopes that could not be read, with their message, for the operator;
                and torn commits (see below)
    .synced     the checkpoint: its mtime is set as each round starts
    tries       the try log, ``tries.1`` its previous generation (``tries``): which tries a
                delivery under way is making, appended before it connects, never synced
    snapshot    left by a clean stop of a big queue: its envelopes as the server held them,
                which the next start-up takes instead of unchanged files (``snapshot``)

Commit protocol (``commit``): the message and its envelope are written to tmp/, the message is
renamed into new/, the envelope into env/, and all of it is made durable: file data and
directory entries.  Only then does the Deferred fire, and only then does the SMTP side say 250.
The envelope written at commit records the message's CRC32 and stored size (``Envelope.crc``,
``Envelope.size``) when the message was in memory (up to ``SPILL`` octets); a spilled message
is fsync'd by name before its rename.

Every change to the spool (commits, envelope updates, removals) goes through *rounds*: what
arrives while a round is on the disk waits for the next one, and a round does the work of all
its operations with one durability step (group commit), away from the reactor, which never
waits on the disk: ``run_round`` runs in the spool process (``spoolproc``; in tests, wherever
the injected runner puts it).  The spool process is sent each change as it comes and gathers
the rounds itself (``spoolchild``): every request waiting in its pipe when a round ends is the
next round, so it never waits for the reactor between two rounds.  The step is either
``fsync`` (each file, then each directory: the classic discipline) or ``syncfs`` (one
``syncfs(2)`` for the spool's file system, which writes back and commits everything dirty on
it: the same guarantee for all the round's files at the cost of one journal commit; the
default on Linux).

With syncfs, a round of commits and removals makes its data and its names durable with one
syncfs, after the renames; a round that replaces an envelope keeps a syncfs before the renames
too (the acknowledged envelope must never be replaced by one whose data may be lost).  A crash
may then leave a commit torn, never one that got its 250: ``recover`` checks the envelopes
written since the checkpoint, ``.synced`` (``checkpoint``), and moves torn commits to corrupt/.

A message is live iff both ``new/<id>`` and ``env/<id>`` exist.  A crash at any instant leaves
either both (committed: the client may or may not have had its 250, it is kept), or one or
none (the client never had a 250: ``recover`` removes the leftover).  Removal unlinks the
envelope first, so a crash in the middle leaves a message without envelope, which ``recover``
removes as already done.
"""

from __future__ import annotations

import contextlib
import errno
import os
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from mxbackup.queue import checkpoint, snapshot, tries
from mxbackup.queue.envelope import Envelope, new_queue_id
from mxbackup.queue.incoming import Incoming
from mxbackup.queue.packed import unpack
from mxbackup.queue.recovery import Chunk
from mxbackup.queue.recoverysteps import Recovery
from mxbackup.queue.rounds import SYNC_MODES, RoundOp, fsync_dir, run_round, undo

log = Logger()

# Runs ``fn(*args)`` (always ``rounds.run_round``) away from the reactor and fires with its
# result: the spool process in the server (``spoolproc.SpoolProcess``), inline or a hand-
# released Deferred in tests.
RoundRunner = Callable[..., defer.Deferred]
FREE_SPACE_TTL = 0.2  # seconds between two statvfs of the spool
SUBDIRS = ("tmp", "new", "cur", "env", "corrupt")


def is_out_of_space(error: BaseException) -> bool:
    return isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT)


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
        runner: RoundRunner,
        clock: Callable[[], float] = time.time,
        sync: str = "",
    ) -> None:
        """``sync``: "syncfs" or "fsync" (see the module's docstring); default: syncfs where
        the system has it."""
        self.root = os.path.abspath(root)
        self._run = runner
        self._clock = clock
        self.sync = sync or SYNC_MODES[0]
        if self.sync not in SYNC_MODES:
            raise ValueError(f"spool sync must be one of {', '.join(SYNC_MODES)}")
        self._pending: list[_Pending] = []
        self._committing = False
        # A runner that ``merges`` (the spool process) is sent each change at once and runs
        # every request that waits for it as one round; with any other, changes wait here
        # while a round runs, and go as the next round.
        self._merging = bool(getattr(runner, "merges", False))
        self._held: list[_Pending] | None = None  # changes gathered by ``together``
        self._free, self._free_at = 0, -FREE_SPACE_TTL
        self._serial = 0
        self._opened = False
        self._recent: float | None = None  # ``checkpoint.recent_since`` at the first open()
        self.try_log = tries.TryLog(self.root)
        # this run started from the last stop's snapshot: try counts it carried are in memory
        # only, so this run's stop writes one too, however small the queue (``service``)
        self.from_snapshot = False
        self._tries_failing = False

    # -- paths ---------------------------------------------------------------------------
    def path(self, sub: str, name: str = "") -> str:
        return os.path.join(self.root, sub, name) if name else os.path.join(self.root, sub)

    def message_path(self, queue_id: str) -> str:
        return self.path("new", queue_id)

    def read_message(self, queue_id: str, limit: int = -1) -> bytes:
        """The stored message (its first ``limit`` octets), read synchronously: a committed
        message is never rewritten, and its start is in the page cache."""
        with open(self.message_path(queue_id), "rb") as f:
            return f.read(limit)

    def open(self) -> None:
        """Create the directory tree and the checkpoint (synchronously, at start-up).  A
        missing checkpoint is created durable before any round runs: what the spool holds
        now is trusted as a whole (the first call reads the checkpoint before that, for
        ``recovered``, whoever calls it first)."""
        if not self._opened:  # what recovery checks is decided before a missing one is made
            self._recent = checkpoint.recent_since(self.root)
            self._opened = True
        for sub in SUBDIRS:
            os.makedirs(self.path(sub), mode=0o700, exist_ok=True)
        checkpoint.ensure(self.root)
        fsync_dir(self.root)

    def free_space(self, at_least: int = 0) -> int:
        """Octets free for us on the spool's file system; measured at most every
        FREE_SPACE_TTL seconds (a statvfs per MAIL command is measurable at high rates), less
        what was queued since.  The cached figure is trusted only when it shows ``at_least``
        octets: one that would refuse is measured again, so acceptance resumes the moment
        space returns."""
        now = self._clock()
        stale = not (0 <= now - self._free_at < FREE_SPACE_TTL)
        if stale or self._free < at_least:
            st = os.statvfs(self.root)
            self._free, self._free_at = st.f_bavail * st.f_frsize, now
        return self._free

    # -- the three changes -----------------------------------------------------------------
    def incoming(self) -> Incoming:
        queue_id = new_queue_id(self._clock())
        return Incoming(self.path("tmp", queue_id), queue_id)

    def commit(self, incoming: Incoming, envelope: Envelope) -> defer.Deferred:
        """Make ``incoming`` and ``envelope`` durable.  Fires with None when the message is
        in the queue (file, envelope and directory entries on disk), or fails with the
        OSError that prevented it, having removed every trace of the message."""
        self._free -= incoming.size
        try:
            message = incoming.seal()
            stored = envelope
            if message is not None:  # what recovery checks a recent commit against
                stored = replace(envelope, size=len(message), crc=zlib.crc32(message))
            op = RoundOp(
                "commit", incoming.id, self.path("tmp", incoming.id + ".env"),
                stored.to_json(), message, incoming.prefix if message is None else b"",
            )  # fmt: skip
        except Exception as e:  # noqa: BLE001 - a write error, or an envelope that will not encode
            incoming.abort()
            return defer.fail(e)
        return self._submit(op, incoming)

    def update(self, envelope: Envelope) -> defer.Deferred:
        """Replace the envelope atomically and durably."""
        self._serial += 1
        tmp = self.path("tmp", f"{envelope.id}.env.{os.getpid()}.{self._serial}")
        return self._submit(RoundOp("update", envelope.id, tmp, envelope.to_json()))

    def remove(self, queue_id: str) -> defer.Deferred:
        """Remove a finished message: envelope and file, made durable with the round.  A crash
        that keeps only one of the two leaves an envelope without message or a message
        without envelope, both of which ``recover`` removes as done; one that keeps both
        (the round was not on disk yet) delivers the message again: a duplicate, never a
        loss."""
        return self._submit(RoundOp("remove", queue_id))

    def note_tries(
        self,
        tried: Iterable[tries.Tried],
        in_flight: Callable[[], Iterable[tries.Tried]] | None,
        now: float,
    ) -> None:
        """Before a delivery connects: the tries it makes, in the try log (``tries``: not a
        round, not synced).  A log that cannot be written does not stop the delivery (a
        full disk is when delivering matters most): it is logged, once until it works."""
        try:
            self.try_log.note(tried, in_flight, now)
        except OSError as e:
            if not self._tries_failing:
                log.error("the try log cannot be written (a crash now would forget the "
                          "tries under way): {e}", e=e)  # fmt: skip
            self._tries_failing = True
            return
        if self._tries_failing:
            log.info("the try log is written again")
            self._tries_failing = False

    # -- rounds ----------------------------------------------------------------------------
    def _submit(self, op: RoundOp, incoming: Incoming | None = None) -> defer.Deferred:
        """Queue ``op`` for the next round.  Its envelope was serialised by the caller, as it
        was at that moment: the caller may go on changing the object while the round runs."""
        pending = _Pending(op, defer.Deferred(), incoming)
        if self._merging:  # the runner makes one round of what waits for it
            if self._held is not None:
                self._held.append(pending)
            else:
                self._send([pending], then=None)
            return pending.done
        self._pending.append(pending)
        if not self._committing:
            self._next_round()
        return pending.done

    @contextlib.contextmanager
    def together(self) -> Iterator[None]:
        """The changes submitted inside go to a merging runner as one request, as the block
        ends (a connection's batch of outcomes: one pickle, one frame and one answer instead
        of fifty, which cost the reactor a sixth of a drain).  Nothing inside may wait for
        them synchronously; elsewhere (another runner, or nested) it changes nothing."""
        if not self._merging or self._held is not None:
            yield
            return
        self._held = []
        try:
            yield
        finally:
            held, self._held = self._held, None
            if held:
                self._send(held, then=None)

    def _next_round(self) -> None:
        if not self._pending:
            self._committing = False
            return
        self._committing = True
        pending, self._pending = self._pending, []
        self._send(pending, then=self._next_round)

    def _send(self, pending: list[_Pending], then: Callable[[], None] | None) -> None:
        """Run ``pending`` as a round; ``then`` (the next round) is started before the
        waiters hear of the outcome: the spool process is idle until then, and answering a
        round's clients (a 250 each, the scheduler told) took ~3 ms of the reactor's time at
        50 clients, a quarter of each round's cycle."""
        d = defer.maybeDeferred(self._run, run_round, self.root, self.sync, [p.op for p in pending])

        def done(results: list[OSError | None]) -> None:
            if then is not None:
                then()
            for p, error in zip(pending, results, strict=True):
                if error is None:
                    p.done.callback(None)
                else:
                    p.done.errback(error)

        def failed(failure: Any) -> None:  # the round's outcome is unknown: undo it all
            for p in pending:  # undone before a next round of a runner that does not merge
                if p.incoming is not None:
                    p.incoming.abort()
                undo(self.root, p.op)
            if then is not None:
                then()
            for p in pending:
                p.done.errback(failure)

        d.addCallbacks(done, failed)

    # -- start-up ------------------------------------------------------------------------
    def recover(self) -> list[Envelope]:
        """``recovered``, as envelopes."""
        return [unpack(packed) for chunk in self.recovered() for packed in chunk.packed]

    def recovered(self) -> Iterator[Chunk]:
        """Synchronously, before listening: finish or undo what a crash left, and yield
        every live message (in queue-id order, i.e. by arrival), its envelope packed
        (``recovery``: read by worker processes when there are many).  Envelopes written
        since the checkpoint may belong to a round a crash interrupted: their commits are
        checked (``checkpoint``), and torn ones moved to corrupt/.  Tries the try log
        names and the envelope does not show were under way at a crash: counted, and due at
        once (``tries.replay``)."""
        recovery = self.begin_recovery()
        yield from recovery.read_here()
        recovery.finish()

    def begin_recovery(self) -> Recovery:
        """The first step of ``recovered`` (``recoverysteps``), for a caller that reads the
        envelopes itself (in the background: ``queue.background``)."""
        self.open()
        recovery = Recovery.begin(self.root, self.sync, self._recent)
        self.from_snapshot = self.from_snapshot or recovery.kept is not None
        return recovery

    def write_snapshot(self, packed: list[tuple[str, bytes]], keep_free: int = 0) -> int:
        """At a clean stop, once no round runs any more: the envelopes the server holds
        packed, for the next start-up (``snapshot``); how many were written.  OSError if it
        cannot be written, or would leave less than ``keep_free`` octets free (nothing is
        left of it: the next start reads every file)."""
        need = snapshot.size_of(packed)
        if self.free_space(at_least=need + keep_free) < need + keep_free:
            raise OSError(
                errno.ENOSPC, f"it needs {need >> 20} MB and would leave less than {keep_free} free"
            )
        return snapshot.write(self.root, packed)
