"""The protocol itself: pipelining order (pitfall 2), back-pressure, line limits (pitfall 5),
the idle timeout on the injected clock (pitfall 9), the error limit, replies as one write.

In memory (StringTransport, Clock); the same behaviours are checked on real sockets in
tests/e2e/test_server_wire.py and test_policy_e2e.py.
"""

from __future__ import annotations

import re

from inbound_case import MSG, TXN, ManualThread, final_codes

from helpers import Harness, spool_files
from mxbackup.inbound.server import BUSY_BUFFER


def test_pipelined_replies_in_order_and_quit_after_commit(tmp_path):
    manual = ManualThread()
    h = Harness(tmp_path, runner=manual)
    c = h.connect()
    c.read()
    lines = c.send(TXN + MSG + b"QUIT\r\n")
    assert final_codes(lines) == [250, 250, 250, 354]  # EHLO, MAIL, RCPT, DATA; no 221 yet
    assert not c.transport.disconnecting
    manual.release_all()
    lines = c.read()
    assert final_codes(lines) == [250, 221]
    assert re.match(r"250 2\.0\.0 Ok: queued as [0-9A-F]+$", lines[0])
    assert c.transport.disconnecting
    assert len(spool_files(tmp_path / "spool", "new")) == 1


def test_two_pipelined_transactions_in_one_packet(h, tmp_path):
    c = h.connect()
    c.read()
    second = b"MAIL FROM:<t@sender.test>\r\nRCPT TO:<v@example.com>\r\nDATA\r\n" + MSG
    lines = c.send(TXN + MSG + second + b"QUIT\r\n")
    assert final_codes(lines) == [250, 250, 250, 354, 250, 250, 250, 354, 250, 221]
    assert len(spool_files(tmp_path / "spool", "new")) == 2


def test_reading_pauses_while_a_commit_is_pending(tmp_path):
    manual = ManualThread()
    h = Harness(tmp_path, runner=manual)
    c = h.connect()
    c.send(TXN + MSG)
    # A quiet client costs no pause/resume while its commit is pending ...
    assert c.transport.producerState == "producing"
    # ... but what it pipelines meanwhile is held only up to BUSY_BUFFER, then reading stops.
    c.send(b"NOOP\r\n" * (BUSY_BUFFER // 6 + 1))
    assert c.transport.producerState == "paused"
    manual.release_all()
    assert c.transport.producerState == "producing"
    assert c.read().count("250 2.0.0 Ok") >= BUSY_BUFFER // 6  # answered, in order, after


def test_command_line_over_512_octets_is_refused_and_session_continues(h):
    c = h.connect()
    c.read()
    lines = c.send(b"NOOP " + b"x" * 600 + b"\r\nNOOP\r\n")
    assert lines[0].startswith("500 5.5.2") and lines[1].startswith("250")


def test_client_that_never_sends_crlf_costs_bounded_memory(h):
    c = h.connect()
    c.read()
    for _ in range(200):
        c.proto.dataReceived(b"A" * 65536)
        assert len(c.proto._buffer) <= 65536 + 512
    c.send(b"\r\n")
    assert c.codes(b"NOOP\r\n") == [250]


def test_too_many_errors_disconnects(h):
    c = h.connect()
    c.read()
    lines = c.send(b"FROB\r\n" * 25)
    assert lines[-1].startswith("421 4.7.0")
    assert c.transport.disconnecting


def test_idle_timeout(h):
    c = h.connect()
    c.read()
    h.clock.advance(299)
    assert not c.transport.disconnecting
    c.send(b"NOOP\r\n")
    h.clock.advance(299)
    assert not c.transport.disconnecting
    h.clock.advance(2)
    assert c.read()[0].startswith("421 4.4.2")
    assert c.transport.disconnecting


def test_idle_timeout_counts_from_the_last_complete_line(h):
    """Trickling bytes of a line that never ends does not reset the timer (slowloris)."""
    c = h.connect()
    c.read()
    lines = []
    for _ in range(10):
        h.clock.advance(50)
        lines += c.read()
        c.send(b"N")  # 500 s of trickle, no CRLF
    assert lines[0].startswith("421 4.4.2"), lines
    assert c.transport.disconnecting


def test_idle_client_that_does_not_read_is_aborted_at_once(h):
    """Its output is paused (it does not read): no 421 would reach it; the slot is freed."""
    c = h.connect()
    c.read()
    c.proto.pauseProducing()  # the transport's buffer is full
    h.clock.advance(301)
    assert c.transport.disconnected  # aborted, not a graceful close waiting on the client


def test_idle_timeout_in_data_removes_partial_message(h, tmp_path):
    c = h.connect()
    c.send(TXN + b"Subject: partial\r\n")
    h.clock.advance(301)
    assert c.transport.disconnecting
    assert spool_files(tmp_path / "spool", "tmp") == []


def test_connection_that_does_not_close_is_aborted(h):
    c = h.connect()
    c.read()
    h.clock.advance(301)  # idle timeout: 421 and close
    assert c.transport.disconnecting
    aborted = []
    c.transport.abortConnection = lambda: aborted.append(True)
    h.clock.advance(11)  # still not gone (e.g. stuck in a TLS handshake): aborted
    assert aborted == [True]


def test_multiline_reply_is_one_write(h):
    c = h.connect()
    c.read()
    writes: list[bytes] = []
    c.transport.write = writes.append
    c.proto.send_lines(250, ["a", "b", "c"])
    assert writes == [b"250-a\r\n250-b\r\n250 c\r\n"]
