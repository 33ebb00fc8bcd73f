"""The queue read at start-up, in three steps: ``Recovery.begin`` (synchronously, before
anything listens: the crash's leftovers undone, the live messages named), the envelopes read
(``read_here``, or chunk by chunk in the background: ``queue.background``), and ``finish``.

A big queue (``BACKGROUND_FROM`` messages or more) is read while the server already accepts
mail: with a cold page cache after a crash, reading a million envelope files took 48-57 s,
and a backup MX that is not listening for a minute after every restart sends its mail
elsewhere.  What makes that safe:

- everything recovery decides from the directory listing (a message without envelope, an
  envelope without message, tmp/) is decided by ``begin``, from a listing taken before any
  round runs: a message accepted later is never among the names recovery reads or removes;
- rounds move the checkpoint while the envelopes are still being checked; so ``begin`` pins
  recovery's window first (``checkpoint.pin``) and ``finish`` lifts the pin only once the
  recent commits found whole are durable: a crash in the middle of the load checks again
  what the crash before it may have torn;
- a message is tried only once its chunk is filed, after its envelope was read: the reading
  never races a rewrite of the same envelope.

Pure file work: no reactor (``Spool.recovered`` drives it synchronously).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from twisted.logger import Logger

from mxbackup.queue import checkpoint, snapshot, tries
from mxbackup.queue.recovery import (
    PARALLEL_FROM,
    Batch,
    Chunk,
    batches_of,
    read_all,
    workers_for,
)
from mxbackup.queue.rounds import fsync_dir, unlink_quietly

log = Logger()

BACKGROUND_FROM = PARALLEL_FROM  # messages: a smaller queue is read before listening (< 1 s)


class Recovery:
    """What ``begin`` found; the envelopes read by ``read_here`` or handed to ``take``."""

    def __init__(self, root: str, sync: str, recent: float | None) -> None:
        self.root = root
        self.sync = sync
        self.recent = recent  # envelopes written since may be torn commits (``checkpoint``)
        self.names: list[str] = []  # the live messages, sorted
        self._count: int | None = None  # how many, once ``batches`` handed them out
        self._messages: set[str] = set()  # messages without envelope: removed by ``finish``
        self._rejoin: set[str] = set()  # ...whose envelope was set aside: joining it there
        self.logged: tries.Logged = {}  # tries a crash may have interrupted
        self.kept: snapshot.Snapshot | None = None  # the last clean stop's snapshot
        self._checked: list[str] = []  # recent commits, found whole
        self._taken = 0  # envelopes taken from the snapshot

    @classmethod
    def begin(cls, root: str, sync: str, recent: float | None) -> Recovery:
        """Clear tmp/, pair new/ and env/ (an envelope without message goes now), open the
        snapshot and read the try log (the spool is open: ``Spool.open``)."""
        self = cls(root, sync, recent)
        for name in os.listdir(self.path("tmp")):
            unlink_quietly(self.path("tmp", name))
        self.names, self._messages = self._with_message(set(os.listdir(self.path("new"))))
        self._rejoin = {q for q in self._messages if self._set_aside_before(q)}
        self._messages -= self._rejoin
        self.kept = snapshot.Snapshot.open(root)
        self.logged = tries.read(root)
        return self

    def path(self, sub: str, name: str = "") -> str:
        return os.path.join(self.root, sub, name) if name else os.path.join(self.root, sub)

    @property
    def count(self) -> int:
        """The live messages ``begin`` found (0 once ``finish`` handed them over)."""
        return self._count if self._count is not None else len(self.names)

    def in_background(self) -> bool:
        """Big enough to be read while the server accepts mail (``BACKGROUND_FROM``)."""
        return self.count >= BACKGROUND_FROM

    def pin(self) -> None:
        """Before any round runs, for a load in the background (``checkpoint.pin``)."""
        checkpoint.pin(self.root, self.recent)

    def batches(self, size: int) -> list[Batch]:
        """The names in batches of ``size``, handed over: the list of them goes (8 MB for a
        million, held beside the batches' own for the whole load)."""
        batches = batches_of(self.names, self.kept, size)
        self._count, self.names = len(self.names), []
        return batches

    def announce(self, how: str) -> None:
        if self.kept is not None:
            how += f", a snapshot of {self.kept.count} from the last stop"
        log.info("spool recover: reading {n} envelopes ({how})", n=self.count, how=how)

    def read_here(self) -> Iterator[Chunk]:
        """Every live message's envelope, packed, in queue-id order (``recovery.read_all``:
        by worker processes when there are many)."""
        workers = workers_for(self.count)
        if self.count >= PARALLEL_FROM:
            self.announce(f"{workers} worker processes" if workers else "in this process")
        env = self.path("env")
        for chunk in read_all(env, self.names, workers, self.recent, self.logged, self.kept):
            yield self.take(chunk)

    def take(self, chunk: Chunk) -> Chunk:
        """A chunk as read: what cannot be read (or was torn) goes to corrupt/.  Its
        messages' lines of the try log are applied now: they leave ``logged`` (which the try
        log carries while the rest is read, ``tries.TryLog.carried``)."""
        for qid, error, torn in chunk.unreadable:
            self._set_aside(qid, error, torn)
            self.logged.pop(qid, None)
        if self.logged:
            for qid in chunk.qids:
                self.logged.pop(qid, None)
        self._checked += chunk.checked
        self._taken += chunk.from_snapshot
        return chunk

    def finish(self) -> None:
        """Every chunk taken: ``report``, then ``settle``."""
        self.report()
        self.settle()

    def report(self) -> None:
        """What the load found, logged (in the server's thread)."""
        if self.kept is not None:
            log.info("spool recover: {taken} of {n} envelopes as the snapshot of the last "
                     "stop had them, the others read", taken=self._taken, n=self.count)  # fmt: skip
        for qid in sorted(self._rejoin):
            log.error("spool recover: {id} moved to corrupt/, beside its envelope set aside "
                      "before a crash", id=qid)  # fmt: skip
        for qid in sorted(self._messages):
            log.warn("spool recover: removing message {id} without envelope", id=qid)

    def settle(self) -> None:
        """The snapshot is used up, messages without envelope go, the recent commits found
        whole are made durable, then the pin is lifted (file work only: a load in the
        background runs it in a thread, for a syncfs may wait on the disk)."""
        snapshot.discard(self.root)  # used once (or unreadable): never started from again
        for qid in self._rejoin:
            os.replace(self.path("new", qid), self.path("corrupt", qid))
        for qid in self._messages:
            unlink_quietly(self.path("new", qid))
        checkpoint.keep_durable(self.root, self._checked, self.sync)
        for sub in ("tmp", "new", "env", "corrupt"):
            fsync_dir(self.path(sub))
        checkpoint.unpin(self.root)
        self.names, self.logged, self._checked = [], {}, []  # the queue holds them now
        self._count = 0

    def _with_message(self, messages: set[str]) -> tuple[list[str], set[str]]:
        """The envelopes of env/ whose message is in ``messages``, sorted (an envelope
        without message is removed), and the messages without envelope: a new set, for the
        one given keeps its table when emptied (32 MB for a million, and the queue's load
        then grew past it: goal 4's peak)."""
        names = []
        for qid in sorted(os.listdir(self.path("env"))):
            if qid in messages:
                messages.discard(qid)
                names.append(qid)
            else:
                log.warn("spool recover: removing envelope {id} without message", id=qid)
                unlink_quietly(self.path("env", qid))
        return names, set(messages)

    def _set_aside_before(self, qid: str) -> bool:
        """A message without envelope whose envelope is in corrupt/: a crash came between
        ``_set_aside``'s two renames (an unreadable envelope's message is the operator's)."""
        return os.path.exists(self.path("corrupt", qid + ".env"))

    def _set_aside(self, qid: str, error: str, torn: bool) -> None:
        """An envelope that cannot be read, or a commit a crash tore (``torn``: written by a
        round that had not completed, so never acknowledged): it and its message go to
        corrupt/."""
        if torn:
            error = (
                "a torn commit, never acknowledged (written by a round that had not "
                f"completed when the system stopped): {error}"
            )
        log.error("spool recover: {id} moved to corrupt/: {e}", id=qid, e=error)
        os.rename(self.path("env", qid), self.path("corrupt", qid + ".env"))
        os.rename(self.path("new", qid), self.path("corrupt", qid))
