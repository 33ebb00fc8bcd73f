"""The envelope format (mxbackup.queue.envelope): versioned JSON, refused when unknown."""

from __future__ import annotations

import json
import re

import pytest

from mxbackup.queue.envelope import VERSION, Envelope, EnvelopeError, Recipient, new_queue_id


def envelope() -> Envelope:
    return Envelope(
        id="0123456789ABCDEF012",
        sender="s@sender.test",
        recipients=[
            Recipient("a@example.com", "example.com", params={"NOTIFY": "FAILURE"}),
            Recipient("b@other.test", None, state="delivered", attempts=2, last_reply="250 ok"),
        ],
        received_at=1700000000.5,
        size=1234,
        client_ip="127.0.0.9",
        helo="c.test",
        params={"BODY": "8BITMIME", "SIZE": None},
        held=True,
    )


def test_round_trip_keeps_every_field():
    original = envelope()
    copy = Envelope.from_json(original.to_json())
    assert copy == original
    assert copy.recipients[0].params == {"NOTIFY": "FAILURE"}


def test_json_is_versioned_and_stable():
    data = json.loads(envelope().to_json())
    assert data["version"] == VERSION
    assert envelope().to_json() == envelope().to_json()  # sorted keys: byte-identical


def test_no_crc_no_key():
    env = Envelope("Q", "", [Recipient("a@b.test", None)], 1.0, 1)
    assert b'"crc"' not in env.to_json()


def test_the_crc_is_optional_and_kept():
    """Envelopes written before the field load (version 1, no CRC); a CRC round-trips."""
    data = json.loads(envelope().to_json())
    assert "crc" not in data
    assert Envelope.from_json(json.dumps(data).encode()).crc is None
    data["crc"] = 0xDEADBEEF
    assert Envelope.from_json(json.dumps(data).encode()).crc == 0xDEADBEEF


def test_pending_lists_only_pending_recipients():
    assert [r.address for r in envelope().pending()] == ["a@example.com"]


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"version": 99}', "unknown envelope version 99"),
        (b'{"id": "x"}', "unknown envelope version None"),
        (json.dumps({"version": VERSION, "id": "x"}).encode(), "bad envelope"),
        (
            json.dumps({"version": VERSION, "recipients": [{"nonsense": 1}]}).encode(),
            "bad envelope",
        ),
    ],
)
def test_unreadable_envelopes_are_refused_with_a_reason(raw, reason):
    with pytest.raises(EnvelopeError, match=re.escape(reason)):
        Envelope.from_json(raw)


def test_queue_ids_sort_by_arrival_and_are_file_name_safe():
    ids = [new_queue_id(1700000000.0 + i / 1000) for i in range(50)]
    assert ids == sorted(ids)
    assert all(re.fullmatch(r"[0-9A-F]{19}", qid) for qid in ids)
    # 24 random bits within one microsecond (a collision fails O_EXCL and is retried)
    assert len({new_queue_id(1700000000.0) for _ in range(100)}) == 100


@pytest.mark.parametrize(
    ("sender", "when"),
    [
        ("s@sender.test", 1_733_443_200.123456),
        ("j\u00fcrgen@sender.test", 1_733_443_200.5),  # not ASCII: escaped, as always
        ("s@sender.test", float("inf")),  # not finite: the standard encoder's Infinity
        ("s@sender.test", 1e16),
        ("s@sender.test", 0.0),
        ("s\x7f@sender.test", 0.0),  # DEL: escaped by the standard encoder, not by orjson
    ],
)
def test_the_stored_form_is_the_standard_encoders_text(sender, when):
    """``to_json`` takes a faster encoder where it gives the same text (ASCII, sorted keys,
    no spaces) and the standard one otherwise: the stored form does not change."""
    env = Envelope(
        id="X",
        sender=sender,
        recipients=[Recipient("u@example.com", "example.com", next_attempt=when)],
        received_at=1_733_443_200.25,
        size=5,
        params={"SIZE": "5", "BODY": None},
        crc=2**31,
    )
    expected = json.dumps(env.to_data(), separators=(",", ":"), sort_keys=True).encode()
    assert env.to_json() == expected
