"""Which queued messages an administrator's command is about (``postsuper``'s selectors):
given ids, ``ALL``, or those matching every filter given: route, sender, recipient, age.

Pure: no reactor, no I/O; the time is passed in.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from mxbackup.outbound.health import target_key
from mxbackup.queue.envelope import Envelope

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
        for qid in self.ids:
            if qid not in queue:
                raise KeyError(f"no message {qid} in the queue")
        if self.ids:
            return [qid for qid in dict.fromkeys(self.ids) if self.matches(queue[qid], now)]
        if not (self.all or self.filters):
            return []
        if index is not None and self.sender is None and self.recipient is None:
            return self._from_index(queue, now, index)
        return sorted(qid for qid, envelope in queue.items() if self.matches(envelope, now))

    def _from_index(self, queue: Mapping[str, Envelope], now: float, index: Index) -> list[str]:
        ids: Iterable[str] = queue
        if self.route is not None:
            ids = index.messages_at(self.route.lower().rstrip("."))
        if self.older_than is not None:
            older = self.older_than
            ids = [qid for qid in ids if now - index.arrival(qid) >= older]
        return sorted(ids)

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


def _text(args: Mapping[str, object], key: str) -> str | None:
    value = args.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValueError(f"{key} must be a string")
    return value
