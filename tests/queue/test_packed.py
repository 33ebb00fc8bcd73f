"""Packed envelopes: what the queue keeps in memory of the messages nobody is using."""

from __future__ import annotations

from mxbackup.queue.envelope import Envelope, Recipient
from mxbackup.queue.packed import pack, pack_json, unpack


def envelope(**more) -> Envelope:
    return Envelope(
        id="18B1A2C3D4E5F0A1B2C",
        sender="someone@sender.test",
        recipients=[
            Recipient(
                "user@example.com", "example.com", attempts=3, next_attempt=1.8e9 + 0.25,
                last_reply="451 4.3.0 try later", params={"NOTIFY": "FAILURE"},
            ),
            Recipient("other@mx.test", None, state="delivered"),
        ],
        received_at=1.8e9,
        size=5120,
        client_ip="192.0.2.1",
        helo="mail.sender.test",
        params={"BODY": "8BITMIME", "ENVID": "x"},
        **more,
    )  # fmt: skip


def test_round_trip_keeps_every_field():
    original = envelope(held=True, delay_warned=True)
    assert unpack(pack(original)) == original
    assert unpack(pack_json(original.to_json())) == original


def test_small_beside_the_stored_form():
    original = envelope()
    assert len(pack(original)) < len(original.to_json()) / 2.5


def test_non_ascii_and_lone_surrogates():
    original = envelope()
    original.recipients[0].address = "jörg@exämple.com"
    original.recipients[0].last_reply = "550 \udcff"  # what orjson will not write
    assert unpack(pack(original)) == original


def test_an_envelope_bigger_than_the_packer_s_window_round_trips():
    """The packer's window is 4 KB (``packed._PACKER``): an envelope of many recipients is
    bigger, and packs and unpacks whole all the same."""
    from mxbackup.queue.envelope import Envelope, Recipient
    from mxbackup.queue.packed import pack, unpack

    rcpts = [Recipient(f"user{i}@example.com", "example.com", attempts=i) for i in range(200)]
    envelope = Envelope("1234567890ABC123456", "s@x.test", rcpts, received_at=1.0, size=9)
    assert len(envelope.to_json()) > 3 * 4096
    assert unpack(pack(envelope)) == envelope
