"""Which queued messages an administrator's command is about (``postsuper``'s selectors):
given ids, ``ALL``, or those matching every filter given: route, sender, recipient, age.

Pure: no reactor, no I/O; the time is passed in.
"""

from __future__ import annotations

import heapq
import re
from bisect import bisect_right
from collections.abc import Generator, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Protocol

from mxbackup.outbound.health import target_key
from mxbackup.queue.envelope import Envelope
from mxbackup.turns import at_once

# Ids looked at per slice of a selection made in slices (``Selector.steps``): ~10 ms of the
# reactor's time each, reading envelopes (sender, recipient) or only sorting ids.
READ_SLICE = 1_000
SORT_SLICE = 20_000
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> float:
    """Seconds from ``3600``, ``90m``, ``1h``, ``2d`` or ``1w``; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if match is None:
        raise ValueError(f"not an age: {text!r} (seconds, or a number with s, m, h, d or w)")
    return float(match.group(1)) * _UNITS[match.group(2)]


class Index(Protocol):
    """What the queue knows of its messages without reading their envelopes."""

    def messages_at(self, key: str) -> Iterable[str]:
        """The ids of the messages with recipients pending at target ``key``."""
        ...

    def arrival(self, qid: str) -> float: ...


@dataclass(frozen=True)
class Selector:
    ids: tuple[str, ...] = ()
    all: bool = False
    route: str | None = None  # a route's domain pattern, or a target key (mx:domain)
    sender: str | None = None  # "" or "<>": the null sender
    recipient: str | None = None
    older_than: float | None = None  # seconds since arrival

    @classmethod
    def from_request(cls, args: Mapping[str, object]) -> Selector:
        """From a control request's arguments (``id`` is the one-message form)."""
        ids = args.get("ids") or ()
        if isinstance(ids, str) or not all(isinstance(i, str) for i in ids):  # type: ignore[union-attr]
            raise ValueError("ids must be a list of queue ids")
        ids = tuple(ids)  # type: ignore[arg-type]
        if isinstance(args.get("id"), str) and args["id"]:
            ids += (args["id"],)  # type: ignore[operator]
        older = args.get("older_than")
        if older is not None and (isinstance(older, bool) or not isinstance(older, int | float)):
            raise ValueError("older_than must be a number of seconds")
        return cls(
            ids=ids,
            all=bool(args.get("all")),
            route=_text(args, "route"),
            sender=_text(args, "sender"),
            recipient=_text(args, "recipient"),
            older_than=float(older) if older is not None else None,
        )

    @property
    def filters(self) -> bool:
        return any(
            v is not None for v in (self.route, self.sender, self.recipient, self.older_than)
        )

    @property
    def empty(self) -> bool:
        return not (self.ids or self.all or self.filters)

    def select(
        self, queue: Mapping[str, Envelope], now: float, index: Index | None = None
    ) -> list[str]:
        """The ids chosen: the given ids (each must be queued: KeyError otherwise) that match
        the filters; without ids, with ``ALL`` or filters, every queued message that
        matches them all, oldest first.  With an ``index``, ``ALL``, a route and an age are
        answered from it, without reading the envelopes (a million are kept packed)."""
        if self.ids:
            return self._given(queue, now)
        return list(at_once(self.steps(queue, now, index, size=max(1, len(queue)))))

    def steps(
        self,
        queue: Mapping[str, Envelope],
        now: float,
        index: Index | None = None,
        size: int | None = None,
    ) -> Generator[None, None, SortedRuns]:
        """``select`` in slices of ``size`` ids (default: ``READ_SLICE`` when envelopes are
        read, else ``SORT_SLICE``), yielding between slices: the caller lets the reactor
        serve its clients there.  Returns the chosen ids as sorted runs; given ids are
        checked and returned at once, in arrival order.  A message gone between two slices
        is left out."""
        if self.ids:
            return SortedRuns((sorted(self._given(queue, now)),))
        if not (self.all or self.filters):
            return SortedRuns()
        by_index = index is not None and self.sender is None and self.recipient is None
        if by_index and self.route is not None:
            ids = list(index.messages_at(self.route.lower().rstrip(".")))  # type: ignore[union-attr]
        else:  # a new list of the ids: one copy, not two, of a million (``Envelopes.ids``)
            ids = queue.ids() if hasattr(queue, "ids") else list(queue)
        size = size or (SORT_SLICE if by_index else READ_SLICE)
        runs = []
        for start in range(0, len(ids), size):
            if start:
                yield
            part = ids[start : start + size]
            if by_index:
                part = [qid for qid in part if qid in queue]  # not gone since the snapshot
                if self.older_than is not None:
                    arrival, older = index.arrival, self.older_than  # type: ignore[union-attr]
                    part = [qid for qid in part if now - arrival(qid) >= older]
            else:
                envelopes = ((qid, queue.get(qid)) for qid in part)
                part = [qid for qid, e in envelopes if e is not None and self.matches(e, now)]
            part.sort()
            runs.append(part)
        return SortedRuns(tuple(runs))

    def _given(self, queue: Mapping[str, Envelope], now: float) -> list[str]:
        for qid in self.ids:
            if qid not in queue:
                raise KeyError(f"no message {qid} in the queue")
        return [qid for qid in dict.fromkeys(self.ids) if self.matches(queue[qid], now)]

    def matches(self, envelope: Envelope, now: float) -> bool:
        if self.older_than is not None and now - envelope.received_at < self.older_than:
            return False
        if self.sender is not None:
            wanted = "" if self.sender in ("", "<>") else self.sender.strip("<>").lower()
            if envelope.sender.lower() != wanted:
                return False
        rcpts: Sequence = envelope.recipients
        if self.route is not None:
            route = self.route.lower().rstrip(".")
            rcpts = [r for r in rcpts if target_key(r) == route]
        if self.recipient is not None:
            address = self.recipient.strip("<>").lower()
            rcpts = [r for r in rcpts if r.address.lower() == address]
        return bool(rcpts)


@dataclass(frozen=True)
class SortedRuns:
    """Queue ids as runs, each sorted (a selection made in slices): read in order by merging
    them, which a page of a listing does only as far as its own length."""

    runs: tuple[list[str], ...] = ()

    def __len__(self) -> int:
        return sum(map(len, self.runs))

    def __iter__(self) -> Iterator[str]:
        return self.after(None)

    def after(self, qid: str | None) -> Iterator[str]:
        """The ids greater than ``qid`` (every id for None), in order."""
        tails: list[Iterator[str]] = [
            iter(run) if qid is None else islice(run, bisect_right(run, qid), None)
            for run in self.runs
        ]
        return tails[0] if len(tails) == 1 else heapq.merge(*tails)


def _text(args: Mapping[str, object], key: str) -> str | None:
    value = args.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value
