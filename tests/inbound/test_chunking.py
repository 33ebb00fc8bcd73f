"""BDAT (RFC 3030): counted chunks never read as commands, the same limits, durability and
stored form as DATA, DATA/BDAT mixing refused, bounded memory, the idle timer."""

from __future__ import annotations

import os

import pytest
from inbound_case import ManualThread, final_codes

from helpers import Harness, base_config, spool_files

START = b"EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\nRCPT TO:<u@example.com>\r\n"


def stored(tmp_path) -> list[bytes]:
    new = tmp_path / "spool" / "new"
    return [(new / name).read_bytes() for name in spool_files(tmp_path / "spool", "new")]


def without_received(message: bytes) -> bytes:
    """The message after our Received header (its first line and continuation lines)."""
    lines = message.split(b"\r\n")
    i = 1
    while lines[i].startswith(b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])


def test_chunks_pipelined_with_the_next_commands_in_one_packet(h, tmp_path):
    c = h.connect()
    c.read()
    one, two = b"Subject: x\r\n\r\n", b"body\r\n.line\r\n"
    lines = c.send(
        START
        + b"BDAT %d\r\n" % len(one)
        + one
        + b"BDAT %d LAST\r\n" % len(two)
        + two
        + b"NOOP\r\nQUIT\r\n"
    )
    assert final_codes(lines) == [250, 250, 250, 250, 250, 250, 221]
    assert lines[-4] == f"250 2.0.0 {len(one)} octets received"
    assert "queued as" in lines[-3]
    (message,) = stored(tmp_path)
    assert message.startswith(b"Received: from c.test")
    assert without_received(message) == one + two  # no dot-unstuffing: ".line" stays
    (env,) = h.woken
    assert env.size == len(message) and [r.address for r in env.recipients] == ["u@example.com"]


def test_chunks_one_at_a_time_and_split_across_packets(h, tmp_path):
    c = h.connect()
    c.send(START)
    assert c.send(b"BDAT 17\r\nSubject: a\r\n") == []
    assert c.send(b"\r\nbod") == ["250 2.0.0 17 octets received"]
    assert c.send(b"BDAT 0\r\n") == ["250 2.0.0 0 octets received"]
    assert final_codes(c.send(b"BDAT 3 LAST\r\ny\r\n")) == [250]
    assert without_received(stored(tmp_path)[0]) == b"Subject: a\r\n\r\nbody\r\n"


def test_bdat_0_last_ends_the_message(h, tmp_path):
    c = h.connect()
    c.send(START + b"BDAT 14\r\nSubject: x\r\n\r\n")
    assert final_codes(c.send(b"BDAT 0 LAST\r\n")) == [250]
    assert without_received(stored(tmp_path)[0]) == b"Subject: x\r\n\r\n"


def test_nothing_in_a_chunk_is_read_as_a_command(h, tmp_path):
    c = h.connect()
    chunk = b"Subject: x\r\n\r\nQUIT\r\nRSET\r\n"
    lines = c.send(b"EHLO c.test\r\nBDAT %d\r\n" % len(chunk) + chunk + b"NOOP\r\n")
    assert final_codes(lines)[1:] == [503, 250]
    assert lines[-2] == "503 5.5.1 Need MAIL before BDAT"
    c.send(START)
    lines = c.send(b"BDAT %d LAST\r\n" % len(chunk) + chunk + b"NOOP\r\n")
    assert final_codes(lines) == [250, 250]
    assert without_received(stored(tmp_path)[0]) == chunk


def test_without_recipients_the_chunk_is_consumed_and_refused(h, tmp_path):
    c = h.connect()
    c.send(b"EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\nRCPT TO:<u@elsewhere.test>\r\n")
    lines = c.send(b"BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n")
    assert lines == ["554 5.5.1 No valid recipients", "250 2.0.0 Ok"]
    assert stored(tmp_path) == []


@pytest.mark.parametrize("arg", [b"", b" x", b" -1", b" 10 FIRST", b" 10 LAST x", b" 1e3"])
def test_bad_bdat_syntax(h, arg):
    c = h.connect()
    c.send(START)
    assert c.send(b"BDAT" + arg + b"\r\n") == ["501 5.5.4 Syntax: BDAT chunk-size [LAST]"]
    assert c.codes(b"BDAT 3 last\r\nx\r\n") == [250]


def test_data_after_bdat_and_rcpt_after_bdat_are_refused(h, tmp_path):
    c = h.connect()
    c.send(START + b"BDAT 14\r\nSubject: x\r\n\r\n")
    assert c.send(b"DATA\r\n") == ["503 5.5.1 DATA not allowed after BDAT in the same transaction"]
    assert c.send(b"RCPT TO:<v@example.com>\r\n")[0].startswith("503 5.5.1")
    assert final_codes(c.send(b"BDAT 3 LAST\r\nb\r\n")) == [250]
    # BDAT after DATA: the end of data ended the transaction.
    c.send(START + b"DATA\r\nSubject: y\r\n\r\n.\r\n")
    assert c.send(b"BDAT 3 LAST\r\nb\r\n") == ["503 5.5.1 Need MAIL before BDAT"]
    assert len(stored(tmp_path)) == 2


def test_size_exceeded_consumes_the_chunk_and_fails_the_transaction(tmp_path):
    h = Harness(tmp_path, base_config(tmp_path, max_message_size=100))
    c = h.connect()
    c.send(START + b"BDAT 60\r\n" + b"Subject: x\r\n\r\n" + b"a" * 44 + b"\r\n")
    lines = c.send(b"BDAT 60\r\n" + b"QUIT\r\n" * 10 + b"BDAT 6 LAST\r\nRSET\r\n" + b"NOOP\r\n")
    assert lines == [
        "552 5.3.4 Message size exceeds fixed limit of 100 octets",
        "503 5.5.1 Need MAIL before BDAT",
        "250 2.0.0 Ok",
    ]
    assert stored(tmp_path) == [] and spool_files(tmp_path / "spool", "tmp") == []


def test_a_huge_chunk_size_allocates_nothing_and_is_refused_once_it_passes_the_limit(h):
    c = h.connect()
    c.send(START)
    assert c.send(b"BDAT 999999999999\r\n") == []
    for _ in range(50):
        c.proto.dataReceived(b"QUIT\r\n" * 10000)
        assert len(c.proto._buffer) == 0
    assert c.proto.chunking.incoming is not None and c.proto.chunking.incoming.size < 200
    c.transport.loseConnection()
    c.proto.connectionLost(None)
    assert c.proto.chunking.incoming is None


def test_bdat_with_dsn_and_smtputf8_keeps_the_envelope(h):
    c = h.connect()
    c.send(
        "EHLO c.test\r\nMAIL FROM:<jürgen@sender.test> SMTPUTF8 RET=HDRS ENVID=x\r\n"
        "RCPT TO:<ü@example.com> NOTIFY=FAILURE\r\n".encode()
    )
    assert final_codes(c.send(b"BDAT 15 LAST\r\nSubject: \xc3\xbc\r\n\r\n")) == [250]
    (env,) = h.woken
    assert env.params == {"SMTPUTF8": None, "RET": "HDRS", "ENVID": "x"}
    assert env.sender == "jürgen@sender.test"
    assert env.recipients[0].params == {"NOTIFY": "FAILURE"}


def test_too_many_received_headers(tmp_path):
    h = Harness(tmp_path, base_config(tmp_path, max_received_headers=2))
    c = h.connect()
    text = b"Received: a\r\nReceived: b\r\nReceived: c\r\n\r\nx\r\n"
    c.send(START)
    assert c.send(b"BDAT %d LAST\r\n" % len(text) + text)[0].startswith("554 5.4.0")
    assert stored(tmp_path) == []


@pytest.mark.parametrize(
    "chunks",
    [
        [b"Subject: x\r\n\r\na\nb\r\n"],
        [b"Subject: x\r\n\r\na\rb\r\n"],
        [b"S: x\r\n\r\na\r", b"b\r\n"],
    ],
)
def test_bare_cr_or_lf_is_refused_as_in_data(h, tmp_path, chunks):
    c = h.connect()
    c.send(START)
    for chunk in chunks[:-1]:
        c.send(b"BDAT %d\r\n" % len(chunk) + chunk)
    lines = c.send(b"BDAT %d LAST\r\n" % len(chunks[-1]) + chunks[-1])
    assert lines[-1] == "554 5.6.0 Message contains a bare CR or LF; lines must end with CRLF"
    assert stored(tmp_path) == []


def test_a_crlf_split_between_chunks_is_no_bare_newline(h, tmp_path):
    c = h.connect()
    c.send(START + b"BDAT 11\r\nSubject: x\r")
    assert final_codes(c.send(b"BDAT 6 LAST\r\n\n\r\nb\r\n")) == [250]
    assert without_received(stored(tmp_path)[0]) == b"Subject: x\r\n\r\nb\r\n"


def test_last_line_without_crlf_is_ended_and_text_without_headers_kept_a_body(h, tmp_path):
    c = h.connect()
    c.send(START)
    assert final_codes(c.send(b"BDAT 9 LAST\r\nhello\r\nab")) == [250]
    assert without_received(stored(tmp_path)[0]) == b"\r\nhello\r\nab\r\n"


def test_long_lines_are_allowed_in_bdat(h, tmp_path):
    c = h.connect()
    c.send(START)
    text = b"Subject: x\r\n\r\n" + b"y" * 5000 + b"\r\n"
    assert final_codes(c.send(b"BDAT %d LAST\r\n" % len(text) + text)) == [250]


def test_250_only_after_the_commit_is_durable(tmp_path):
    runner = ManualThread()
    h = Harness(tmp_path, runner=runner)
    c = h.connect()
    c.send(START + b"BDAT 3 LAST\r\nx\r\nNOOP\r\n")
    assert c.read() == []  # nothing until the round is done (and NOOP waits behind it)
    assert spool_files(tmp_path / "spool", "new") == []
    runner.release_all()
    lines = c.read()
    assert "queued as" in lines[0] and lines[1] == "250 2.0.0 Ok"
    assert spool_files(tmp_path / "spool", "new") != []


def test_commit_failure_is_4xx(tmp_path):
    from twisted.internet import defer

    h = Harness(tmp_path, runner=lambda fn, *a: defer.fail(OSError(28, os.strerror(28))))
    c = h.connect()
    c.send(START)
    assert c.send(b"BDAT 3 LAST\r\nx\r\n")[-1].startswith("452 4.3.1")


def test_idle_timeout_during_a_chunk_removes_the_partial_message(h, tmp_path):
    c = h.connect()
    c.send(START + b"BDAT 400000\r\n" + b"z" * 300000)
    assert spool_files(tmp_path / "spool", "tmp") != []  # spilled to disk, not in memory
    h.clock.advance(h.config.server.idle_timeout - 1)
    c.send(b"z" * 10)  # chunk octets (no LF) keep the connection alive
    h.clock.advance(h.config.server.idle_timeout - 1)
    assert not c.transport.disconnecting
    h.clock.advance(2)
    assert c.read()[-1].startswith("421 4.4.2")
    c.proto.connectionLost(None)
    assert spool_files(tmp_path / "spool", "tmp") == []


def test_rset_drops_the_open_message(h, tmp_path):
    c = h.connect()
    c.send(START + b"BDAT 300000\r\n" + b"z" * 300000)
    assert spool_files(tmp_path / "spool", "tmp") != []
    c.send(b"RSET\r\n" + START)
    assert final_codes(c.send(b"BDAT 3 LAST\r\nx\r\n")) == [250]
    assert spool_files(tmp_path / "spool", "tmp") == [] and len(stored(tmp_path)) == 1


@pytest.mark.parametrize(
    "ending",
    [b"RSET\r\n", b"EHLO again.test\r\n", b"HELO again.test\r\n"],
    ids=["rset", "ehlo", "helo"],
)
def test_an_abandoned_chunked_message_is_removed_at_once(h, tmp_path, ending):
    """Regression (issue 13): the spilled file of a message whose transaction ended stayed in
    tmp/ until the next BDAT or the end of the connection."""
    c = h.connect()
    c.send(START + b"BDAT 300000\r\n" + b"z" * 300000)
    assert spool_files(tmp_path / "spool", "tmp") != []
    assert final_codes(c.send(ending)) == [250]
    assert spool_files(tmp_path / "spool", "tmp") == []
    # and a new transaction on the same connection works as usual
    c.send(b"MAIL FROM:<s@sender.test>\r\nRCPT TO:<u@example.com>\r\n")
    assert final_codes(c.send(b"BDAT 3 LAST\r\nx\r\n")) == [250]
    assert len(stored(tmp_path)) == 1


def test_a_new_mail_after_an_abandoned_chunked_message_starts_clean(h, tmp_path):
    c = h.connect()
    c.send(START + b"BDAT 300000\r\n" + b"z" * 300000 + b"RSET\r\n")
    assert spool_files(tmp_path / "spool", "tmp") == []
    c.send(b"MAIL FROM:<s@sender.test>\r\nRCPT TO:<u@example.com>\r\n")
    assert final_codes(c.send(b"BDAT 14 LAST\r\nSubject: n\r\n\r\n")) == [250]
    assert without_received(stored(tmp_path)[0]) == b"Subject: n\r\n\r\n"
