"""The DATA stream reader, on its own: end of data, dot-stuffing, limits, bare CR/LF."""

from __future__ import annotations

import pytest

from mxbackup import replies
from mxbackup.inbound.datastream import DataReader


def test_long_line_scan_is_linear():
    """A body of 998-octet lines is scanned in linear time (the regex anchors at line starts)."""
    import time

    block = (b"z" * 998 + b"\r\n") * 2000  # 2 MB
    reader = DataReader(lambda b: None, 10**9, 50)
    reader.feed(b"Subject: x\r\n\r\n")
    start = time.process_time()
    reader.feed(block)
    # Quadratic scanning took ~0.6 s here; linear takes a few ms.  Generous bound, CPU time.
    assert time.process_time() - start < 0.2
    assert reader.error is None


def read(*packets: bytes, max_size: int = 10**6, max_received: int = 50):
    """Feed ``packets`` as a session would (the unconsumed rest stays in front of the next)."""
    out: list[bytes] = []
    reader = DataReader(out.append, max_size, max_received)
    buf, done = b"", False
    for packet in packets:
        buf += packet
        used, done = reader.feed(buf)
        buf = buf[used:]
    return reader, b"".join(out), done, buf


def test_end_of_data_and_what_follows_is_left_for_the_commands():
    reader, out, done, rest = read(b"Subject: x\r\n\r\nbody\r\n.\r\nQUIT\r\n")
    assert done and rest == b"QUIT\r\n" and reader.error is None
    assert out == b"Subject: x\r\n\r\nbody\r\n"


def test_empty_message():
    reader, out, done, rest = read(b".\r\n")
    assert done and out == b"" and rest == b""


def test_dot_unstuffing_including_the_first_line():
    _, out, done, _ = read(b"..a\r\nb\r\n..\r\n.c\r\n.\r\n")
    assert done and out == b"\r\n.a\r\nb\r\n.\r\nc\r\n"  # no header: a blank line first


def test_stuffed_dot_split_across_packets():
    _, out, done, _ = read(b"Subject: x\r\n\r\n", b".", b".x\r\n", b".\r", b"\n")
    assert done and out == b"Subject: x\r\n\r\n.x\r\n"


@pytest.mark.parametrize("bad", [b"a\nb\r\n", b"a\rb\r\n", b"a\r\r\n"], ids=repr)
def test_bare_cr_or_lf_refuses_the_message_and_writes_nothing_more(bad):
    reader, out, done, _ = read(b"Subject: x\r\n\r\n" + bad + b"more\r\n.\r\n")
    assert done and reader.error == replies.BARE_NEWLINE
    assert b"more" not in out


@pytest.mark.parametrize("fake", [b"\n.\n", b"\r\n.\n", b"\n.\r\n", b"\r.\r\n"], ids=repr)
def test_only_crlf_dot_crlf_ends_the_data(fake):
    reader, _, done, _ = read(b"Subject: x\r\n\r\na" + fake + b"MAIL FROM:<e@x.test>\r\n")
    assert not done


def test_size_limit():
    reader, _, done, _ = read(b"Subject: x\r\n\r\n" + b"y" * 100 + b"\r\n.\r\n", max_size=50)
    assert done and reader.error == replies.MESSAGE_TOO_BIG.format(50)


def test_received_headers_counted_in_the_header_section_only():
    hops = b"Received: a\r\nreceived : b\r\n"
    reader, _, _, _ = read(hops + b"\r\nReceived: body\r\n.\r\n", max_received=2)
    assert reader.error is None and reader.received_headers == 2
    reader, _, _, _ = read(hops + b"RECEIVED: c\r\n\r\n.\r\n", max_received=2)
    assert reader.error == replies.TOO_MANY_HOPS.format(3)


def test_over_long_line_is_skipped_with_bounded_buffer():
    reader = DataReader(lambda b: None, 10**9, 50)
    used, done = reader.feed(b"x" * 5000)
    assert not done and used == 5000 and reader.error == replies.TEXT_LINE_TOO_LONG
    assert reader.feed(b"yy\r") == (0, False)  # a short rest waits for more input
    assert reader.feed(b"yy\r\n.\r\n") == (7, True)
    assert reader.error == replies.TEXT_LINE_TOO_LONG
    reader = DataReader(lambda b: None, 10**9, 50)
    # a trailing CR is kept for the LF that may follow in the next packet
    assert reader.feed(b"x" * 5000 + b"\r") == (5000, False)


@pytest.mark.parametrize(
    ("line", "refused"),
    [
        (b"a" * 998, False),  # 998 + CRLF = 1000 octets: the limit
        (b"a" * 999, True),
        (b"." + b"a" * 998, False),  # the stuffed dot is not counted
        (b"." + b"a" * 999, True),
        (b".." + b"a" * 997, False),
    ],
    ids=lambda v: repr(v)[:12] if isinstance(v, bytes) else str(v),
)
def test_the_line_limit_counts_the_text_without_the_stuffed_dot(line, refused):
    """``_take`` measures only lines that may be too long, after unstuffing: the bounds."""
    body = (b"b" * 76 + b"\r\n") * 900  # a block of its own, beside the line
    for packets in (
        (b"Subject: x\r\n\r\n" + body + line + b"\r\n.\r\n",),
        (body, line + b"\r\n", b".\r\n"),
    ):
        reader, _, done, _ = read(*packets)
        assert done and (reader.error == replies.TEXT_LINE_TOO_LONG) is refused


@pytest.mark.parametrize("bad", [b"\r", b"\n"], ids=repr)
def test_a_bare_cr_or_lf_deep_inside_a_big_block_is_found(bad):
    lines = [b"c" * 76] * 1500
    lines[1234] = b"c" * 30 + bad + b"c" * 30
    reader, _, done, _ = read(b"Subject: x\r\n\r\n" + b"\r\n".join(lines) + b"\r\n.\r\n")
    assert done and reader.error == replies.BARE_NEWLINE
