"""The queue's envelopes in memory: those in use as objects, the others packed.

Pure: no reactor, no I/O.  A million queued messages as ``Envelope`` objects take ~600 MB; the
ones nobody is using (waiting for their next attempt, or for a primary that is down) are kept
packed (``queue.packed``: ~50 octets each) and made objects again when they are needed.

Rules that keep one object per message: looking up an envelope by id (``get``, ``[]``) makes
it an object and keeps it (whoever changes it changes the one in the queue); ``peek`` and
``view()`` read without keeping (a listing of a million does not unpack them all into memory;
what they return must not be changed).  ``compact`` packs only envelopes nothing else holds a
reference to (``sys.getrefcount``: a delivery, a DSN being written, a command in progress all
hold theirs) and that the caller says are idle (not in flight).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from itertools import islice

from mxbackup.queue.envelope import Envelope, id_time
from mxbackup.queue.packed import pack, unpack

KEEP = 2_000  # objects kept whatever their use: a small queue is never packed
PACK_PER_CALL = 4_000  # ~25 ms of packing per scheduler tick, or as many as were unpacked


class Envelopes(Mapping[str, Envelope]):
    def __init__(self) -> None:
        self._objects: dict[str, Envelope] = {}
        self._packed: dict[str, bytes] = {}
        self._unpacked = 0  # since the last ``compact``
        self.doubted: set[str] = set()  # a write of theirs failed (see ``doubt``)

    # -- the mapping: lookups keep what they unpack ------------------------------------------
    def __len__(self) -> int:
        return len(self._objects) + len(self._packed)

    def __iter__(self) -> Iterator[str]:
        """The ids (a snapshot: lookups meanwhile move envelopes between the two maps)."""
        return iter(self.ids())

    def ids(self) -> list[str]:
        """The ids, as a new list (a copy of a million: ~13 ms; ``[*a, *b]`` took ~21)."""
        ids = list(self._objects)
        ids.extend(self._packed)
        return ids

    def __contains__(self, qid: object) -> bool:
        return qid in self._objects or qid in self._packed

    def __getitem__(self, qid: str) -> Envelope:
        envelope = self._objects.get(qid)
        if envelope is None:
            envelope = self._objects[qid] = unpack(self._packed[qid])
            del self._packed[qid]
            self._unpacked += 1
        return envelope

    def objects(self) -> int:
        """How many are unpacked (the rest are packed)."""
        return len(self._objects)

    # -- reading without keeping -------------------------------------------------------------
    def peek(self, qid: str) -> Envelope | None:
        """The envelope to read: the object if it is one, else an unpacked copy that is not
        kept (changing it changes nothing)."""
        envelope = self._objects.get(qid)
        if envelope is not None:
            return envelope
        blob = self._packed.get(qid)
        return unpack(blob) if blob is not None else None

    def loaded(self, qid: str) -> Envelope | None:
        """The envelope if it is an object now (a packed one is in no try), else None."""
        return self._objects.get(qid)

    def arrival(self, qid: str) -> float:
        """When the message arrived: its ``received_at``, or for a packed one the time its id
        was made (at the start of its transaction), without unpacking it."""
        envelope = self._objects.get(qid)
        return envelope.received_at if envelope is not None else id_time(qid)

    def packed_items(self) -> list[tuple[str, bytes]]:
        """(id, packed envelope) of the packed ones (a clean stop's snapshot): not the
        objects nor the doubted, whose files the next start-up reads."""
        doubted = self.doubted
        return [item for item in self._packed.items() if item[0] not in doubted]

    def snapshot_keeps(self, qid: str) -> bool:
        """Whether ``packed_items`` holds it now (packed, not doubted)."""
        return qid in self._packed and qid not in self.doubted

    def doubt(self, qid: str) -> None:
        """A change to the envelope in memory may not be in its file (writing it, or a DSN
        it was waiting for, failed): the snapshot of a clean stop leaves it out, for good in
        this run (the file is the truth; one read more at the next start-up)."""
        self.doubted.add(qid)

    def view(self) -> Mapping[str, Envelope]:
        """A read-only mapping whose lookups ``peek`` (listings, selections, status)."""
        return _View(self)

    # -- changes -----------------------------------------------------------------------------
    def put(self, envelope: Envelope) -> None:
        self._packed.pop(envelope.id, None)
        self._objects[envelope.id] = envelope

    def put_packed(self, qids: list[str], blobs: list[bytes]) -> None:
        """Packed envelopes (``queue.packed``, at start-up) that are not objects here."""
        self._packed.update(zip(qids, blobs, strict=True))

    def discard(self, qid: str) -> None:
        self._objects.pop(qid, None)
        self._packed.pop(qid, None)

    def compact(self, idle: Callable[[str], bool], limit: int | None = None) -> int:
        """Pack up to ``limit`` (default: ``PACK_PER_CALL``, or as many as were unpacked
        since the last call, so that a tick's tries at dead targets cannot unpack faster than
        this packs) of the oldest objects beyond the first ``KEEP`` that are ``idle`` and
        held by nothing else; the others go to the back of the line.  Returns how many were
        packed."""
        if not _REFCOUNTS_AS_EXPECTED:
            return 0
        if limit is None:
            limit = max(PACK_PER_CALL, self._unpacked)
        self._unpacked = 0
        extra = min(limit, len(self._objects) - KEEP)
        packed = 0
        for qid in list(islice(self._objects, max(0, extra))):
            envelope = self._objects.pop(qid)
            if idle(qid) and _unreferenced(envelope):
                self._packed[qid] = pack(envelope)
                packed += 1
            else:
                self._objects[qid] = envelope
        return packed


def _unreferenced(envelope: Envelope) -> bool:
    """Nothing but the caller's one variable refers to the envelope, its recipients or its
    parameters (each count includes getrefcount's own argument and the one owner)."""
    if sys.getrefcount(envelope) > 3 or sys.getrefcount(envelope.recipients) > 2:
        return False
    if sys.getrefcount(envelope.params) > 2:
        return False
    return all(
        sys.getrefcount(r) <= 3 and sys.getrefcount(r.params) <= 2 for r in envelope.recipients
    )


def _calibrate() -> bool:
    """Whether ``_unreferenced`` counts as this Python does: true of one envelope held by
    nothing else, false of one also held elsewhere.  Where it does not (another
    interpreter's reference counting), nothing is packed: memory, never correctness."""
    from mxbackup.queue.envelope import Recipient

    def made() -> Envelope:
        return Envelope("0", "", [Recipient("a@b", None)], 0.0, 0)

    store = {"0": made()}
    envelope = store.pop("0")  # as ``compact`` holds it
    alone = _unreferenced(envelope)
    store = {"0": made()}
    elsewhere = store["0"]
    envelope = store.pop("0")
    held = _unreferenced(envelope)
    rcpt = elsewhere.recipients[0]
    del elsewhere
    in_use = _unreferenced(envelope)  # a recipient held elsewhere
    del rcpt
    return alone and not held and not in_use and _unreferenced(envelope)


_REFCOUNTS_AS_EXPECTED = _calibrate()


class _View(Mapping[str, Envelope]):
    def __init__(self, envelopes: Envelopes) -> None:
        self._envelopes = envelopes

    def __len__(self) -> int:
        return len(self._envelopes)

    def __iter__(self) -> Iterator[str]:
        return iter(self._envelopes)

    def ids(self) -> list[str]:
        return self._envelopes.ids()

    def __contains__(self, qid: object) -> bool:
        return qid in self._envelopes

    def __getitem__(self, qid: str) -> Envelope:
        envelope = self._envelopes.peek(qid)
        if envelope is None:
            raise KeyError(qid)
        return envelope
