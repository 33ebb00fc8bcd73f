"""The stored text that DATA and BDAT share: pieces cut anywhere give the same octets, counts
and refusals; and (Hypothesis) one message sent with DATA and with BDAT in random chunks is
stored byte for byte the same."""

from __future__ import annotations

from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from helpers import Harness, spool_files
from mxbackup import replies
from mxbackup.inbound.messagetext import MAX_HELD, MessageText

START = b"EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\nRCPT TO:<u@example.com>\r\n"


def text_of(pieces: list[bytes], max_received: int = 50, check: bool = True):
    out: list[bytes] = []
    text = MessageText(out.append, 10**9, max_received, check_newlines=check)
    for piece in pieces:
        text.feed(piece)
    text.finish()
    return text, b"".join(out)


def test_a_header_field_name_cut_anywhere_is_still_a_header():
    whole = b"Subject: x\r\n\r\nbody\r\n"
    for cut in range(1, len(whole)):
        assert text_of([whole[:cut], whole[cut:]])[1] == whole
    assert text_of([b"no header here\r\n"])[1] == b"\r\nno header here\r\n"
    assert text_of([b"Sub", b"ject\r\n"])[1] == b"\r\nSubject\r\n"
    assert text_of([b"\r", b"\nbody\r\n"])[1] == b"\r\nbody\r\n"
    assert text_of([])[1] == b""


def test_received_headers_counted_across_pieces_only_in_the_header_section():
    message = b"Received: a\r\nX: y\r\nreceived : b\r\n\r\nReceived: body\r\n"
    for cut in range(1, len(message)):
        text, _ = text_of([message[:cut], message[cut:]])
        assert text.received_headers == 2, cut
    text, out = text_of([message], max_received=1)
    assert text.error == replies.TOO_MANY_HOPS.format(2) and out == b""


def test_a_long_header_line_costs_bounded_memory():
    text = MessageText(lambda b: None, 10**9, 50)
    text.feed(b"X-Long: ")
    for _ in range(100):
        text.feed(b"y" * 10000)
        assert len(text._line) <= MAX_HELD
    text.feed(b"\r\nReceived: a\r\n\r\n")
    assert text.received_headers == 1


def test_bare_newlines_are_found_across_pieces():
    assert text_of([b"a\r", b"\nb\r\n"])[0].error is None
    assert text_of([b"a\r", b"b\r\n"])[0].error == replies.BARE_NEWLINE
    assert text_of([b"a\r\n", b"\nb\r\n"])[0].error == replies.BARE_NEWLINE
    assert text_of([b"a\r\nb\r"])[0].error == replies.BARE_NEWLINE
    assert text_of([b"a\nb"], check=False)[0].error is None  # DATA checks the wire itself


def test_size_limit():
    out: list[bytes] = []
    text = MessageText(out.append, 10, 50)
    text.feed(b"Subject: x\r\n")
    assert text.error == replies.MESSAGE_TOO_BIG.format(10) and out == []


# -- DATA and BDAT store the same message the same way (Hypothesis) ------------------------
_LINE = st.one_of(
    st.binary(max_size=120).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    st.sampled_from([b"", b".", b"..", b".x", b"Received: by x", b"Subject: s", b"X:y", b"a b"]),
)
MESSAGES = st.lists(_LINE, max_size=30).map(lambda lines: b"".join(x + b"\r\n" for x in lines))


def dot_stuffed(message: bytes) -> bytes:
    return b"".join(
        (b"." + line if line.startswith(b".") else line) for line in message.splitlines(True)
    )


def body_after_received(path: Path) -> bytes:
    lines = path.read_bytes().split(b"\r\n")
    i = 1
    while lines[i].startswith(b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(message=MESSAGES, cuts=st.lists(st.integers(min_value=0, max_value=4000), max_size=6))
def test_data_and_bdat_store_byte_identical_files(tmp_path_factory, message, cuts):
    tmp = tmp_path_factory.mktemp("same")
    h = Harness(tmp)
    c = h.connect()
    c.send(START + b"DATA\r\n")
    assert "queued" in c.send(dot_stuffed(message) + b".\r\n")[-1]
    bounds = sorted({0, len(message), *(x for x in cuts if x < len(message))})
    chunks = [message[a:b] for a, b in zip(bounds, bounds[1:], strict=False)]
    commands = b"".join(b"BDAT %d\r\n" % len(chunk) + chunk for chunk in chunks)
    lines = c.send(START + commands + b"BDAT 0 LAST\r\n")
    assert "queued" in lines[-1], lines
    first, second = (tmp / "spool" / "new" / n for n in spool_files(tmp / "spool", "new"))
    assert body_after_received(first) == body_after_received(second)
