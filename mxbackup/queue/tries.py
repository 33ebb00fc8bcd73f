"""The try log: which recipients' try a delivery is about to make, so that a crash in the
middle of it is counted (the route's ``retries`` hold) and retried at once after the restart.

Before a connection sends anything, the server appends one line per message to ``tries`` in
the spool root: the queue id and, for each recipient in flight, its index in the envelope and
its try count with this try included (``4A1...F3 0:2 3:2``).  The envelope itself is written
only with the outcome (or removed), as Postfix's queue manager does: one rewrite and one
durability barrier less per delivered message, which was half of what the spool process did
during a drain (issue 17, goal 4).

The log is a hint, never a commit: it is appended with one ``write(2)`` and not synced.  A
process crash keeps it (the page cache survives the process); a power cut may lose its tail,
and with it one try count per message in flight (one retry more each, never mail).  At
start-up ``replay`` raises an envelope's counts to what the log says and marks those
recipients in flight (``Recipient.inflight``: due at once); an entry whose envelope already
shows the count (the outcome was written) or is gone (delivered) changes nothing, so the log
needs no truncation at any particular moment.  It is rotated once it reaches ``ROTATE_AT``
octets: the current file becomes ``tries.1`` (replacing the previous one, whose tries have long
been recorded), and the new one starts with the tries still in flight.

Pure file work: no Twisted; the server's process writes it (``Spool.note_tries``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from mxbackup.queue.envelope import Envelope

FILE = "tries"
OLD = "tries.1"
ROTATE_AT = 256 * 1024  # octets: ~7,000 tries; the two files are read at every start-up

Counts = tuple[tuple[int, int], ...]  # (recipient's index, its try count with this try)
Tried = tuple[str, Counts]  # (queue id, counts)


def tried(envelope: Envelope) -> Counts:
    """The recipients of ``envelope`` a try is under way for (``inflight``), with their counts."""
    return tuple((i, r.attempts) for i, r in enumerate(envelope.recipients) if r.inflight)


def _line(qid: str, counts: Counts) -> bytes:
    return (qid + "".join(f" {i}:{n}" for i, n in counts) + "\n").encode("ascii")


def parse(data: bytes) -> dict[str, dict[int, int]]:
    """Queue id -> recipient's index -> the highest try count logged.  A line that does not
    parse (the torn end of a write cut short) is skipped."""
    found: dict[str, dict[int, int]] = {}
    for raw in data.split(b"\n"):
        fields = raw.split()
        if len(fields) < 2:
            continue
        try:
            qid = fields[0].decode("ascii")
            counts = [tuple(int(x) for x in f.split(b":")) for f in fields[1:]]
        except ValueError:
            continue
        if not qid.isalnum() or any(len(c) != 2 or min(c) < 0 for c in counts):
            continue
        mine = found.setdefault(qid, {})
        for i, n in counts:
            mine[i] = max(n, mine.get(i, 0))
    return found


def read(root: str) -> dict[str, dict[int, int]]:
    """Both generations of the log under the spool ``root`` (none: empty)."""
    data = []
    for name in (OLD, FILE):
        try:
            with open(os.path.join(root, name), "rb") as f:
                data.append(f.read())
        except FileNotFoundError:
            continue
    return parse(b"\n".join(data))


def replay(raw: bytes, counts: dict[int, int]) -> bytes:
    """The stored envelope ``raw`` with the logged ``counts`` applied: a pending recipient
    whose stored count is lower was in a try a crash interrupted (count raised, marked in
    flight).  ``raw`` itself when nothing changes.  EnvelopeError if it cannot be read."""
    envelope = Envelope.from_json(raw)
    changed = False
    for i, n in counts.items():
        if i < len(envelope.recipients):
            rcpt = envelope.recipients[i]
            if rcpt.state == "pending" and rcpt.attempts < n:
                rcpt.attempts, rcpt.inflight, changed = n, True, True
    return envelope.to_json() if changed else raw


class TryLog:
    """The appending end of the log (opened at the first ``note``)."""

    def __init__(self, root: str, rotate_at: int = ROTATE_AT) -> None:
        self.path = os.path.join(root, FILE)
        self.old = os.path.join(root, OLD)
        self.rotate_at = rotate_at
        self._fd: int | None = None
        self._size = 0
        self._torn = False  # a write was cut short: the next one starts on a new line

    def note(self, tries: Iterable[Tried], in_flight: Callable[[], Iterable[Tried]]) -> None:
        """Append ``tries``; past ``rotate_at`` octets, rotate, keeping what ``in_flight``
        gives (every try still under way).  OSError if the file cannot be written."""
        self._append(b"".join(_line(qid, counts) for qid, counts in tries if counts))
        if self._size >= self.rotate_at:
            self.close()
            os.rename(self.path, self.old)
            self._append(b"".join(_line(qid, counts) for qid, counts in in_flight() if counts))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd, self._size = None, 0

    def _append(self, data: bytes) -> None:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            self._size = os.fstat(self._fd).st_size
        if self._torn:
            data = b"\n" + data
        written = os.write(self._fd, data) if data else 0
        self._size += written
        self._torn = written < len(data)
        if self._torn:
            raise OSError(28, "No space left on device (try log cut short)", self.path)
