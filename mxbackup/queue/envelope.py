"""The envelope of one queued message: sender, ESMTP parameters and per-recipient state.

Pure: no reactor, no I/O.  Stored as versioned JSON beside the message; an unknown version is
refused rather than guessed at.  One message file, one envelope, one state per recipient (the
OpenSMTPD model, kept in a single file so a state change is one atomic rename).
"""

from __future__ import annotations

import json
import math
import random
import secrets
import sys
from collections.abc import Iterable
from dataclasses import MISSING, dataclass, field, fields
from typing import Any, Literal

import orjson

VERSION = 1
# Seeded once from the system's randomness: ids need to be unpredictable across restarts and
# unique within a microsecond, not cryptographic (a collision fails O_EXCL: 451, retried).
_RANDOM = random.Random(secrets.token_bytes(16))

State = Literal["pending", "delivered", "failed"]


class EnvelopeError(ValueError):
    pass


def new_queue_id(now: float) -> str:
    """Unique, sortable by arrival, safe as a file name: 13 hex digits of µs + 6 random."""
    return f"{int(now * 1_000_000):013X}{_RANDOM.getrandbits(24):06X}"


def key_for(route: str | None, address: str) -> str:
    """The target a recipient with this route and address is delivered to: its route, or
    its domain's MX hosts (``mx:<domain>``)."""
    if route is not None:
        return route
    return "mx:" + address.rpartition("@")[2].lower()


# Per target of a message: (target, recipients pending there, their earliest next attempt,
# whether a crash interrupted a try of any of them).
Targets = tuple[tuple[str, int, float, bool], ...]


def pending_targets(rcpts: Iterable[tuple[str, str, float, bool]]) -> Targets:
    """``Targets`` of the pending recipients given as (target, state, next attempt,
    interrupted)."""
    found: dict[str, tuple[str, int, float, bool]] = {}
    for key, state, when, interrupted in rcpts:
        if state != "pending":
            continue
        _, count, earliest, any_interrupted = found.get(key, (key, 0, when, False))
        found[key] = (key, count + 1, min(earliest, when), any_interrupted or interrupted)
    return tuple(found.values())


def id_time(queue_id: str) -> float:
    """The time ``new_queue_id`` made ``queue_id`` from (0.0 for an id it did not make)."""
    try:
        return int(queue_id[:13], 16) / 1_000_000
    except ValueError:
        return 0.0


@dataclass(slots=True)
class Recipient:
    address: str
    route: str | None  # the route's domain pattern; None = deliver by MX lookup
    state: State = "pending"
    attempts: int = 0
    next_attempt: float = 0.0
    last_reply: str = ""
    params: dict[str, str | None] = field(default_factory=dict)  # NOTIFY, ORCPT
    inflight: bool = False  # an attempt was started and its outcome is not yet written


@dataclass(slots=True)
class Envelope:
    id: str
    sender: str  # "" for the null sender <>
    recipients: list[Recipient]
    received_at: float
    size: int
    client_ip: str = ""
    helo: str = ""
    params: dict[str, str | None] = field(default_factory=dict)  # SIZE, BODY, RET, ENVID
    held: bool = False
    delay_warned: bool = False
    crc: int | None = None  # CRC32 of the stored message, written at commit (spool.Spool.commit)

    def pending(self) -> list[Recipient]:
        return [r for r in self.recipients if r.state == "pending"]

    def to_data(self) -> dict[str, Any]:
        """The JSON object of the envelope (``version`` included), sharing its values."""
        # By hand, not dataclasses.asdict (a deep copy of everything): this runs for every
        # state change of every message.
        data: dict[str, Any] = {"version": VERSION}
        for name in _ENVELOPE_FIELDS:
            data[name] = getattr(self, name)
        if self.crc is None:  # written only at commit: the rest stays readable by older code
            del data["crc"]
        data["params"] = dict(self.params)
        data["recipients"] = [
            {name: getattr(r, name) for name in _RECIPIENT_FIELDS} for r in self.recipients
        ]
        return data

    def to_json(self) -> bytes:
        """The stored form (ASCII JSON, keys sorted). ``orjson`` writes it (a third of the
        standard encoder's time, on every state change: the same text for every value an
        envelope holds; floats below 1e-4 would be spelled out, not 1e-05, the same value)
        unless the standard encoder's text is needed: an address that is not ASCII
        (escaped) or a DEL, a time that is not finite (``Infinity``; orjson writes null), an integer
        beyond 64 bits (orjson refuses)."""
        data = self.to_data()
        finite = math.isfinite(self.received_at) and all(
            math.isfinite(r.next_attempt) for r in self.recipients
        )
        if finite:
            try:
                raw = orjson.dumps(data, option=orjson.OPT_SORT_KEYS)
            except TypeError:  # orjson.JSONEncodeError
                raw = b""
            if raw and raw.isascii() and b"\x7f" not in raw:  # (DEL: escaped by json)
                return raw
        return json.dumps(data, separators=(",", ":"), sort_keys=True).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Envelope:
        return cls.from_data(parse_json(raw))

    @classmethod
    def from_data(cls, data: dict[str, Any]) -> Envelope:
        """From ``parse_json``'s object (which it consumes)."""
        try:
            recipients = [
                Recipient(**_interned(r, _RECIPIENT_SHARED)) for r in data.pop("recipients")
            ]
            return cls(recipients=recipients, **_interned(data, _ENVELOPE_SHARED))
        except (TypeError, KeyError, AttributeError) as e:
            raise EnvelopeError(f"bad envelope: {e}") from None


def parse_json(raw: bytes) -> dict[str, Any]:
    """The envelope's JSON object without its version, which must be ours; its fields are
    checked by name (``from_data`` builds it: a million are read at start-up, so the fast
    path, ``orjson``, with the standard parser for what it refuses, e.g. lone surrogates)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:
            data = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as e:
            raise EnvelopeError(f"not JSON: {e}") from None
    if not isinstance(data, dict):
        raise EnvelopeError("not a JSON object")
    version = data.pop("version", None)
    if version != VERSION:
        raise EnvelopeError(f"unknown envelope version {version!r}")
    rcpts = data.get("recipients")
    if not _ENVELOPE_REQUIRED <= data.keys() <= _ENVELOPE_NAMES or not isinstance(rcpts, list):
        raise EnvelopeError(f"bad envelope: fields {sorted(data)}")
    for r in rcpts:
        if not isinstance(r, dict) or not _RECIPIENT_REQUIRED <= r.keys() <= _RECIPIENT_NAMES:
            raise EnvelopeError("bad envelope: a recipient's fields")
    return data


def _required(cls: type) -> list[str]:
    return [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]


_RECIPIENT_FIELDS = tuple(f.name for f in fields(Recipient))
_ENVELOPE_FIELDS = tuple(f.name for f in fields(Envelope) if f.name not in ("recipients", "params"))
_RECIPIENT_NAMES = frozenset(_RECIPIENT_FIELDS)
_ENVELOPE_NAMES = frozenset(f.name for f in fields(Envelope))
_RECIPIENT_REQUIRED = frozenset(_required(Recipient))
_ENVELOPE_REQUIRED = frozenset(_required(Envelope))

# Values that repeat across a big queue (the same route, reply, client, sender...): interned as
# they are read, so a million queued messages share one copy of each instead of a million.
_RECIPIENT_SHARED = ("address", "route", "state", "last_reply")
_ENVELOPE_SHARED = ("sender", "client_ip", "helo")


def _interned(data: dict[str, Any], names: tuple[str, ...]) -> dict[str, Any]:
    for name in names:
        value = data.get(name)
        if type(value) is str:
            data[name] = sys.intern(value)
    return data
