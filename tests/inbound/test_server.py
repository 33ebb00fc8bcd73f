"""The protocol itself: pipelining order (pitfall 2), back-pressure, line limits (pitfall 5),
the idle timeout on the injected clock (pitfall 9), the error limit, replies as one write.

In memory (StringTransport, Clock); the same behaviours are checked on real sockets in
tests/e2e/test_server_wire.py and test_policy_e2e.py.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from inbound_case import MSG, TXN, ManualThread, final_codes
from twisted.internet import defer

from helpers import Harness, spool_files
from mxbackup import replies
from mxbackup.inbound.address import Mailbox
from mxbackup.inbound.rcpt.addresslist import AddressListLink
from mxbackup.inbound.rcpt.chain import Chain
from mxbackup.inbound.rcpt.decision import ACCEPT
from mxbackup.inbound.rcpt.routing import RoutingInAddress
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


# -- the seam: validateFrom / validateTo may answer later; the order of replies is kept -------
class Later:
    """An asynchronous RCPT link whose answers the test gives by hand."""

    def __init__(self) -> None:
        self.pending: list[defer.Deferred] = []

    def decide(self, transaction, recipient):
        d: defer.Deferred = defer.Deferred()
        self.pending.append(d)
        return d


def test_asynchronous_rcpt_link_keeps_pipelined_replies_in_order(h):
    later = Later()
    h.factory.policy.rcpt_chain = Chain([RoutingInAddress(), later, AddressListLink()])
    c = h.connect()
    c.read()
    lines = c.send(
        b"MAIL FROM:<s@sender.test>\r\nRCPT TO:<u@example.com>\r\n"
        b"RCPT TO:<carol@sub.example.org>\r\nNOOP\r\n"
    )
    assert final_codes(lines) == [250]  # the first RCPT waits; nothing behind it runs
    later.pending[0].callback(ACCEPT)
    assert final_codes(c.read()) == [250]  # its 250; the second RCPT waits in turn
    later.pending[1].callback(ACCEPT)
    lines = c.read()
    assert final_codes(lines) == [550, 250]  # address list after the async link, then NOOP
    assert "5.1.1" in lines[0]


def test_validate_to_gets_our_mailbox_and_validate_from_the_transaction(h):
    c = h.connect()
    seen = []
    to, from_ = c.proto.validateTo, c.proto.validateFrom
    c.proto.validateTo = lambda mailbox: seen.append(mailbox) or to(mailbox)
    c.proto.validateFrom = lambda txn: seen.append(txn) or from_(txn)
    c.send(b"EHLO c.test\r\nMAIL FROM:<s@Sender.test> SIZE=10\r\nRCPT TO:<U@Example.com>\r\n")
    txn, mailbox = seen
    assert isinstance(mailbox, Mailbox) and str(mailbox) == "U@example.com"
    assert (txn.helo, txn.client_ip, str(txn.sender), txn.params) == (
        "c.test",
        "127.0.0.9",
        "s@sender.test",
        {"SIZE": "10"},
    )


def test_asynchronous_mail_refusal_is_answered_in_order(h):
    c = h.connect()
    c.read()
    pending: defer.Deferred = defer.Deferred()
    c.proto.validateFrom = lambda txn: pending
    assert c.send(b"MAIL FROM:<s@sender.test>\r\nNOOP\r\n") == []
    pending.callback(replies.INSUFFICIENT_SPACE)
    assert c.read() == [str(replies.INSUFFICIENT_SPACE), "250 2.0.0 Ok"]


def test_a_handler_that_fails_answers_451_and_the_session_goes_on(h):
    c = h.connect()
    c.read()
    c.proto.validateFrom = lambda txn: defer.fail(RuntimeError("bug"))
    assert c.send(b"MAIL FROM:<s@sender.test>\r\nNOOP\r\n") == [
        str(replies.LOCAL_ERROR),
        "250 2.0.0 Ok",
    ]


# -- commands: bare CR, NUL, 8-bit ------------------------------------------------------------
def test_bare_cr_nul_and_non_ascii_in_commands(h):
    c = h.connect()
    c.read()
    assert c.send(b"NO\rOP\r\n") == [str(replies.BARE_NEWLINE_COMMAND)]
    assert c.send(b"NOOP\x00\r\n") == [str(replies.BARE_NEWLINE_COMMAND)]
    assert c.send("NOOP \u00e9\r\n".encode()) == [str(replies.BAD_8BIT_COMMAND)]
    assert c.send(b"noop\r\n") == ["250 2.0.0 Ok"]  # verbs in any case
    assert c.send(b"NOOP\n") == ["250 2.0.0 Ok"]  # a bare LF ends a command line


# -- what we rely on of Twisted: public API only ----------------------------------------------
def test_server_registers_itself_as_a_streaming_producer(h):
    c = h.connect()
    assert c.transport.producer is c.proto and c.transport.streaming


def test_connection_lost_in_data_removes_the_partial_message_and_frees_the_slot(h, tmp_path):
    c = h.connect()
    c.send(TXN + b"Subject: partial\r\n")
    assert h.factory.connections == 1
    c.proto.connectionLost(None)
    assert spool_files(tmp_path / "spool", "tmp") == []
    assert h.factory.connections == 0 and not h.factory.per_ip


INBOUND = Path(__file__).resolve().parents[2] / "mxbackup" / "inbound"


@pytest.mark.parametrize("path", sorted(INBOUND.rglob("*.py")), ids=lambda p: p.name)
def test_no_twisted_mail_no_forged_objects_no_transport_privates(path):
    text = path.read_text()
    assert "twisted.mail" not in text
    assert "__new__" not in text
    assert not re.search(r"(transport|factory|reactor|clock)\._[a-z]", text)


def test_mail_and_rcpt_lines_may_carry_500_more_octets_for_dsn(h):
    """RFC 3461 5: NOTIFY and ORCPT may make RCPT 500 octets longer than 512."""
    c = h.connect()
    c.send(b"EHLO c.test\r\nMAIL FROM:<s@x.test> ENVID=" + b"e" * 100 + b"\r\n")
    rcpt = b"RCPT TO:<u@example.com> NOTIFY=SUCCESS,FAILURE,DELAY ORCPT=rfc822;" + b"x" * 480
    assert 512 < len(rcpt) + 2 <= 1012
    assert c.codes(rcpt + b"\r\n") == [250]
    assert c.send(rcpt + b"x" * 500 + b"\r\n")[0].startswith("500 5.5.2 Line too long")
    assert c.send(b"NOOP " + b"x" * 600 + b"\r\n")[0].startswith("500 5.5.2 Line too long")
