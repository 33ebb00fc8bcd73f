"""Envelopes packed for keeping in memory: a long outage of a big domain queues millions.

Pure: no reactor, no I/O.  A packed envelope is its JSON object deflated with a preset
dictionary (``zlib``'s ``zdict``) that spells what every envelope spells the same way (the
field names, the usual states, replies and flags), so what is left is mostly the id, the times
and the addresses: 30-120 octets instead of ~600 as objects.  Packing takes ~6 µs, unpacking
(``Envelope`` included) ~8 µs.  The form lives in this process only: the dictionary may change
from one version to the next.
"""

from __future__ import annotations

import zlib

import orjson

from mxbackup.queue.envelope import Envelope, Recipient, parse_json

_WBITS = -15  # a raw deflate stream: no header or checksum to pay for, the blob is ours


def _dictionary() -> bytes:
    """A typical envelope's JSON, built from the fields as they are."""
    rcpt = Recipient(
        "postmaster@example.com", "example.com", attempts=1,
        last_reply="4.4.1 target is down: connection refused", next_attempt=1.8e9,
        params={"NOTIFY": "FAILURE,DELAY", "ORCPT": "rfc822;"},
    )  # fmt: skip
    envelope = Envelope(
        "1234567890ABC123456", "sender@example.org", [rcpt], received_at=1.8e9, size=5120,
        client_ip="127.0.0.1", helo="mail.example.org", params={"BODY": "8BITMIME"},
    )  # fmt: skip
    samples = [
        envelope.to_json(),
        b'"state":"delivered""state":"failed""inflight":true,"params":{},"route":null,',
        b'"SIZE":"ENVID":"RET":"HDRS""SMTPUTF8":null,"250 2.0.0 Ok',
        envelope.to_json(),
    ]
    return b"".join(samples)


_ZDICT = _dictionary()
DICTIONARY_CRC = zlib.crc32(_ZDICT)  # names the packed form (``snapshot`` is written in it)


# A compressor primed with the dictionary, copied for each envelope: a 4 KB window holds the
# dictionary and an envelope, and a small hash table is enough for them (8.6 -> 5.6 µs per
# envelope against a new compressor with zlib's defaults, the same octets for a typical
# envelope; a start-up packs a million).  Any raw-deflate reader with the dictionary reads
# it (``unpack_json``).
_PACKER = zlib.compressobj(1, zlib.DEFLATED, -12, 4, zlib.Z_DEFAULT_STRATEGY, _ZDICT)


def pack_json(raw: bytes) -> bytes:
    """A stored envelope's JSON (as read from ``env/``), packed."""
    packer = _PACKER.copy()
    return packer.compress(raw) + packer.flush()


def pack(envelope: Envelope) -> bytes:
    try:
        raw = orjson.dumps(envelope.to_data())
    except TypeError:  # what orjson will not write (a lone surrogate): the stored form
        raw = envelope.to_json()
    return pack_json(raw)


def unpack_json(blob: bytes) -> bytes:
    """The JSON ``blob`` was packed from (zlib.error if it is not a packed envelope)."""
    unpacker = zlib.decompressobj(_WBITS, _ZDICT)
    return unpacker.decompress(blob) + unpacker.flush()


def unpack(blob: bytes) -> Envelope:
    envelope = Envelope.from_data(parse_json(unpack_json(blob)))
    envelope.crc = None  # only start-up recovery checks it: not kept, nor written by updates
    return envelope
