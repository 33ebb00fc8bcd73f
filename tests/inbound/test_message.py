"""DATA: durable commit before 250, local failures 4xx (pitfall 1), one file per transaction
(pitfall 10), the body's limits and the smuggling defence through the session (pitfalls 5, 6),
our Received header on top."""

from __future__ import annotations

import errno
import os

import pytest
from inbound_case import MSG, TXN, final_codes
from twisted.internet import defer

from helpers import Harness, spool_files


@pytest.mark.parametrize(
    ("err", "expected"),
    [(errno.ENOSPC, "452 4.3.1"), (errno.EIO, "451 4.3.0"), (errno.EDQUOT, "452 4.3.1")],
)
def test_commit_failure_is_temporary_and_leaves_nothing(tmp_path, err, expected):
    def failing(fn, *args):
        os.sync()
        return defer.fail(OSError(err, os.strerror(err)))

    h = Harness(tmp_path, runner=failing)
    c = h.connect()
    c.send(TXN)
    lines = c.send(MSG)
    assert lines[-1].startswith(expected)
    # The message is not in the queue (the worker never ran, so tmp/ keeps the partial file
    # until recover(); nothing is in new/ or env/).
    spool = tmp_path / "spool"
    assert spool_files(spool, "new") == [] and spool_files(spool, "env") == []
    # The session goes on.
    assert c.codes(b"NOOP\r\n") == [250]


def test_write_error_during_data_is_4xx(tmp_path, monkeypatch):
    h = Harness(tmp_path)
    c = h.connect()
    c.send(TXN)
    incoming = c.proto.message.incoming
    incoming.error = OSError(errno.ENOSPC, "No space left on device")
    assert final_codes(c.send(MSG)) == [452]
    assert spool_files(tmp_path / "spool", "tmp") == []


def test_batch_failure_inside_worker_is_4xx_and_cleans_up(tmp_path, monkeypatch):
    h = Harness(tmp_path)
    real_rename = os.rename

    def rename(src, dst):
        if "/env/" in str(dst):
            raise OSError(errno.EIO, "I/O error")
        return real_rename(src, dst)

    monkeypatch.setattr(os, "rename", rename)
    c = h.connect()
    c.send(TXN)
    assert c.send(MSG)[-1].startswith("451 4.3.0")
    spool = tmp_path / "spool"
    assert spool_files(spool, "new") == spool_files(spool, "env") == spool_files(spool, "tmp") == []


def test_data_line_over_1000_octets_is_refused_and_not_read_as_commands(h, tmp_path):
    c = h.connect()
    c.send(TXN)
    long_line = b"x" * 70000 + b"\r\n"
    injected = b"RSET\r\nMAIL FROM:<evil@x.test>\r\n"
    lines = c.send(b"Subject: x\r\n\r\n" + long_line + injected + b".\r\n")
    assert final_codes(lines) == [500]
    assert lines[0].startswith("500 5.5.2")
    assert spool_files(tmp_path / "spool", "new") == []
    assert len(c.proto._buffer) == 0


def test_line_of_exactly_998_octets_is_accepted(h, tmp_path):
    c = h.connect()
    c.send(TXN)
    assert final_codes(c.send(b"Subject: x\r\n\r\n" + b"y" * 998 + b"\r\n.\r\n")) == [250]


SMUGGLE_ENDINGS = [b"\n.\r\n", b"\r\n.\n", b"\n.\n", b"\r.\r\n", b"\r\n.\r", b"\r\n\x00.\r\n"]


@pytest.mark.parametrize(
    "body", [b"a\rb\n.\r\n", b"x\r\n\nq\r\r\n", b"\n\r\r\n", b"one\rtwo\r\nthree\n"], ids=repr
)
def test_bare_cr_and_bare_lf_do_not_pass_as_a_pair(h, tmp_path, body):
    """As many CRs as LFs, but not adjacent: still bare ones (a CR early and an LF before a
    dot later must not pass as one CRLF, or the dot line could end DATA at the primary)."""
    c = h.connect()
    c.send(TXN)
    lines = c.send(b"Subject: x\r\n\r\n" + body + b"\r\n.\r\n")
    assert final_codes(lines) == [554]
    assert spool_files(tmp_path / "spool", "new") == []


@pytest.mark.parametrize("fake_end", SMUGGLE_ENDINGS, ids=repr)
def test_smuggled_end_of_data_never_makes_a_second_message(h, tmp_path, fake_end):
    c = h.connect()
    c.send(TXN)
    smuggled = (
        b"Subject: one\r\n\r\nfirst" + fake_end + b"MAIL FROM:<evil@x.test>\r\n"
        b"RCPT TO:<victim@example.com>\r\nDATA\r\nSubject: smuggled\r\n\r\nevil\r\n.\r\n"
    )
    lines = c.send(smuggled)
    assert len(spool_files(tmp_path / "spool", "new")) <= 1
    queued = [line for line in lines if "queued as" in line]
    assert len(queued) <= 1
    if fake_end.count(b"\r") != fake_end.count(b"\n") or b"\x00" in fake_end:
        # bare CR/LF: the whole thing is one refused message
        if b"\x00" not in fake_end:
            assert final_codes(lines)[0] == 554 and not queued


def test_bare_lf_in_body_is_refused(h, tmp_path):
    c = h.connect()
    c.send(TXN)
    lines = c.send(b"Subject: x\r\n\r\nline one\nline two\r\n.\r\n")
    assert lines[0].startswith("554 5.6.0")
    assert spool_files(tmp_path / "spool", "new") == []


def test_end_of_data_split_across_packets(h, tmp_path):
    c = h.connect()
    c.send(TXN)
    out = []
    for piece in [b"Subject: x\r\n\r\nab", b"c\r", b"\n", b".", b"\r", b"\n"]:
        out += c.send(piece)
    assert final_codes(out) == [250]
    (name,) = spool_files(tmp_path / "spool", "new")
    assert (tmp_path / "spool" / "new" / name).read_bytes().endswith(b"\r\n\r\nabc\r\n")


def test_dot_unstuffing_and_received_header(h, tmp_path):
    c = h.connect()
    c.send(TXN)
    body = b"Subject: x\r\n\r\n..leading dot\r\n.\r\n"
    c.send(body[:-3] + b".\r\n")
    (name,) = spool_files(tmp_path / "spool", "new")
    data = (tmp_path / "spool" / "new" / name).read_bytes()
    received, _, rest = data.partition(b"Subject: x")
    assert rest == b"\r\n\r\n.leading dot\r\n"
    assert received.startswith(b"Received: from c.test ([127.0.0.9])\r\n\tby mx2.example.net")
    assert f"id {name}".encode() in received
    assert received.count(b"\n") == received.count(b"\r\n")  # no bare LF (pitfall 6)


def test_message_without_headers_keeps_its_body_a_body(h, tmp_path):
    c = h.connect()
    c.send(TXN)
    c.send(b"just text, no header\r\n.\r\n")
    (name,) = spool_files(tmp_path / "spool", "new")
    data = (tmp_path / "spool" / "new" / name).read_bytes()
    assert b"\r\n\r\njust text, no header\r\n" in data


def test_one_file_per_transaction_with_many_recipients(h, tmp_path):
    c = h.connect()
    rcpts = b"".join(b"RCPT TO:<u%d@example.com>\r\n" % i for i in range(5))
    c.send(b"EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\n" + rcpts + b"DATA\r\n")
    c.send(MSG)
    assert len(spool_files(tmp_path / "spool", "new")) == 1
    (env,) = h.woken
    assert [r.address for r in env.recipients] == [f"u{i}@example.com" for i in range(5)]


def test_stuffed_line_of_998_octets_of_text_is_accepted(h, tmp_path):
    c = h.connect()
    c.send(TXN)
    lines = c.send(b"Subject: x\r\n\r\n." + b"y" * 998 + b"\r\n.\r\n")
    assert final_codes(lines) == [250]
    c.send(TXN)
    assert final_codes(c.send(b"Subject: x\r\n\r\n." + b"y" * 999 + b"\r\n.\r\n")) == [500]


def test_wakeup_failure_does_not_send_a_second_reply(h):
    def boom(envelope):
        raise RuntimeError("scheduler bug")

    h.factory.wakeup = boom
    c = h.connect()
    c.send(TXN)
    lines = c.send(MSG + b"NOOP\r\n")
    assert final_codes(lines) == [250, 250]
    assert "queued as" in lines[0]


def test_data_without_mail_names_the_missing_command(h):
    c = h.connect()
    c.read()
    assert c.send(b"DATA\r\n") == ["503 5.5.1 Need MAIL before DATA"]


def test_the_250_goes_out_before_the_accepted_line_is_logged(h):
    """The client waits for the 250 only: the log line (formatted and written) and the
    scheduler's wakeup come after it, off the end-of-data -> 250 path (goal 2's latency)."""
    from twisted.logger import globalLogPublisher

    c = h.connect()
    c.send(TXN)
    sent_when_logged: list[bytes] = []

    def observer(event: dict) -> None:
        if event.get("log_format", "").startswith("accepted id="):
            sent_when_logged.append(c.transport.value())

    globalLogPublisher.addObserver(observer)
    try:
        assert final_codes(c.send(MSG)) == [250]
    finally:
        globalLogPublisher.removeObserver(observer)
    assert len(sent_when_logged) == 1
    assert b"250 2.0.0" in sent_when_logged[0].splitlines()[-1]
