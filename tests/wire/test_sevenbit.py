"""The 7-bit conversion (Hypothesis): the output is 7-bit with lines of at most 998 octets,
the MIME structure is kept, and decoding each converted part gives back its original bytes."""

from __future__ import annotations

import email
import email.policy

from hypothesis import given, settings
from hypothesis import strategies as st

from mxbackup.wire.sevenbit import Converter, convert, scan

# body lines: any octet but CR and LF, at most 998 of them
line = st.binary(max_size=200).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
body = st.lists(line, min_size=1, max_size=8).map(lambda ls: b"\r\n".join(ls))
encoding = st.sampled_from([None, "7bit", "8bit", "binary"])


def leaf(data: bytes, cte: str | None) -> bytes:
    head = b"Content-Type: text/plain; charset=utf-8\r\n"
    if cte:
        head += b"Content-Transfer-Encoding: " + cte.encode() + b"\r\n"
    return head + b"\r\n" + data


@st.composite
def messages(draw) -> tuple[bytes, list[bytes]]:
    parts = draw(st.lists(st.tuples(body, encoding), min_size=1, max_size=4))
    nested = draw(st.booleans())
    out = b"Subject: test\r\nMIME-Version: 1.0\r\n"
    out += b'Content-Type: multipart/mixed; boundary="=_b1"\r\n\r\npreamble\r\n'
    for i, (data, cte) in enumerate(parts):
        out += b"--=_b1\r\n"
        if nested and i == 0:
            out += b"Content-Type: message/rfc822\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
            out += b"Subject: inner\r\n" + leaf(data, cte) + b"\r\n"
        else:
            out += leaf(data, cte) + b"\r\n"
    out += b"--=_b1--\r\nepilogue\r\n"
    return out, [data for data, _ in parts]


def leaves(msg: email.message.Message) -> list[bytes]:
    out = []
    for part in msg.walk():
        if part.is_multipart() or part.get_content_maintype() == "message":
            continue
        out.append(part.get_payload(decode=True))
    return out


@settings(max_examples=150, deadline=None)
@given(messages(), st.integers(min_value=1, max_value=5000))
def test_converted_mail_is_7bit_and_decodes_to_the_original(sample, chunk) -> None:
    message, originals = sample
    converted = convert(message)
    assert converted.isascii()
    assert max(len(ln) for ln in converted.split(b"\r\n")) <= 998
    parsed = email.message_from_bytes(converted, policy=email.policy.compat32)
    assert leaves(parsed) == originals
    # chunked as the body sender feeds it: the same octets, however the message is cut
    plan = scan([message])
    if not plan.needed:
        assert converted == message  # no 8-bit octet: sent as it is
        return
    converter = Converter(plan)
    pieces = [converter.feed(message[i : i + chunk]) for i in range(0, len(message), chunk)]
    assert b"".join(pieces) + converter.end() == converted


@given(st.binary(max_size=300).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")))
def test_non_mime_8bit_body_becomes_text_plain_unknown_8bit(data) -> None:
    message = b"Subject: x\r\n\r\n" + data + b"\r\n"
    converted = convert(message)
    assert converted.isascii()
    if data.isascii():
        assert converted == message  # nothing to change: sent as it is
        return
    assert b"Content-Type: text/plain; charset=unknown-8bit\r\n" in converted
    parsed = email.message_from_bytes(converted, policy=email.policy.compat32)
    assert parsed.get_payload(decode=True) == data + b"\r\n"


def test_base64_part_and_8bit_headers_are_left_as_they_are() -> None:
    message = b"Subject: caf\xc3\xa9\r\nContent-Transfer-Encoding: base64\r\n\r\nAAAA\r\n"
    assert convert(message) == message
