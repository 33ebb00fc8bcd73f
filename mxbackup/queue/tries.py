"""The try log: which recipients' try a delivery is about to make, so that a crash in the
middle of it is counted (the route's ``retries`` hold) and retried at once after the restart.

Before a connection sends anything, the server appends one line per message to ``tries`` in
the spool root: the queue id, the time, and for each recipient in flight its index in the
envelope and its try count with this try included (``4A1...F3 1764954181.250 0:2 3:2``).
The envelope itself is written only with the outcome (or removed), as Postfix's queue manager
does: one rewrite and one durability barrier less per delivered message, which was half of
what the spool process did during a drain (issue 17, goal 4).

The log is a hint, never a commit: it is appended with one ``write(2)`` and not synced.  A
process crash keeps it (the page cache survives the process); a power cut may lose its tail,
and with it one try count per message in flight (one retry more each, never mail).  At
start-up ``replay`` raises an envelope's counts to what the log says and marks those
recipients in flight (``Recipient.inflight``: due at once).  A recipient's last line wins: a
try taken back because it never reached the target (``Recorder``) is noted again with the
lower count, so a count is never raised for a try that was not made (that would bounce mail
early); an envelope that already shows the count (the outcome was written) or is gone
(delivered) is left as it is, so the log needs no truncation at any particular moment.  Once
``ROTATE_AT`` octets were appended the log is rotated: the current file becomes ``tries.1``
(replacing the previous one), and the new one starts with the tries still in flight.

Pure file work: no Twisted; the server's process writes it (``Spool.note_tries``).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from mxbackup.queue.envelope import Envelope

FILE = "tries"
OLD = "tries.1"
ROTATE_AT = 256 * 1024  # octets appended: ~5,000 tries; both files are read at start-up

Counts = tuple[tuple[int, int], ...]  # (recipient's index, its try count with this try)
Tried = tuple[str, Counts]  # (queue id, counts)
Logged = dict[str, dict[int, int]]  # queue id -> recipient's index -> its last count


def tried(envelope: Envelope) -> Counts:
    """The recipients of ``envelope`` a try is under way for (``inflight``), with their counts."""
    return tuple((i, r.attempts) for i, r in enumerate(envelope.recipients) if r.inflight)


def _line(qid: str, counts: Counts, now: float) -> bytes:
    return (f"{qid} {now:.3f}" + "".join(f" {i}:{n}" for i, n in counts) + "\n").encode()


def parse(data: bytes) -> Logged:
    """Queue id -> recipient's index -> the try count its last line gives (the time is for
    the reader).  A line that does not parse (the torn end of a write cut short) is skipped."""
    found: Logged = {}
    for raw in data.split(b"\n"):
        fields = raw.split()
        if len(fields) < 3:
            continue
        try:
            qid, _ = fields[0].decode("ascii"), float(fields[1])
            counts = [tuple(int(x) for x in f.split(b":")) for f in fields[2:]]
        except ValueError:
            continue
        if not qid.isalnum() or any(len(c) != 2 or min(c) < 0 for c in counts):
            continue
        found.setdefault(qid, {}).update(counts)
    return found


def read(root: str) -> Logged:
    """Both generations of the log under the spool ``root``.  None, or one that cannot be
    read, is empty: the log is a hint, and the server must start without it."""
    data = []
    for name in (OLD, FILE):
        try:
            with open(os.path.join(root, name), "rb") as f:
                data.append(f.read())
        except OSError:
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
        self._appended = 0  # octets since the last rotation (what is carried over excluded)
        self._torn = False  # a write was cut short: the next one starts on a new line
        # While a big queue is read in the background (``queue.background``): the lines the
        # start-up found, carried into every new log, for those of messages not read yet
        # must stay until they are (two rotations would drop them).  ``Recovery.take`` drops
        # a message's lines once it is read: carried after a newer line of it (a try made
        # since), an old one would win and lower its count.
        self.carried: Logged = {}

    def note(
        self, tries: Iterable[Tried], in_flight: Callable[[], Iterable[Tried]] | None, now: float
    ) -> None:
        """Append ``tries`` (noted at ``now``); once ``rotate_at`` octets were appended,
        rotate, keeping what ``in_flight`` gives (every try still under way; None: not now).
        OSError if the file cannot be written."""
        self._appended += self._append(
            b"".join(_line(qid, counts, now) for qid, counts in tries if counts)
        )
        if in_flight is not None and self._appended >= self.rotate_at:
            self.close()
            os.rename(self.path, self.old)
            self._appended = 0
            carried = [(q, tuple(counts.items())) for q, counts in self.carried.items()]
            kept = [*carried, *in_flight()]  # in flight last: a recipient's last line wins
            self._append(b"".join(_line(q, counts, now) for q, counts in kept if counts))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def _append(self, data: bytes) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o600)
            size = os.fstat(self._fd).st_size  # a tail a crash cut short: a new line first
            self._torn = self._torn or (size > 0 and os.pread(self._fd, 1, size - 1) != b"\n")
        if self._torn and data:
            data = b"\n" + data
        written = os.write(self._fd, data) if data else 0
        self._torn = written < len(data)
        if self._torn:
            raise OSError(28, "No space left on device (try log cut short)", self.path)
        return written
