"""Protocol-level regression tests: one or more per override of twisted.mail.smtp.ESMTP.

In memory (StringTransport, Clock); the same behaviours are checked on real sockets in
test_wire.py and test_policy_e2e.py.
"""

from __future__ import annotations

import errno
import os
import re

import pytest
from twisted.internet import defer
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from helpers import Harness, base_config, spool_files
from mxbackup import replies
from mxbackup.inbound.server import BUSY_BUFFER

MSG = b"Subject: hi\r\n\r\nbody\r\n.\r\n"
TXN = b"EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n"


def final_codes(lines: list[str]) -> list[int]:
    return [int(line[:3]) for line in lines if line[3:4] == " "]


@pytest.fixture
def h(tmp_path):
    return Harness(tmp_path)


class ManualThread:
    """A round runner whose results the test releases by hand (to hold a commit open)."""

    def __init__(self) -> None:
        self.calls: list[tuple[defer.Deferred, object, tuple]] = []

    def __call__(self, fn, *args) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred()
        self.calls.append((d, fn, args))
        return d

    def release_all(self) -> None:
        while self.calls:
            d, fn, args = self.calls.pop(0)
            try:
                d.callback(fn(*args))
            except Exception as e:  # noqa: BLE001
                d.errback(e)


# -- pitfall 1: local failures are 4xx, never 550 ---------------------------------------------
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


# -- pitfall 2: pipelining keeps order; "." + QUIT keeps its 250 -----------------------------
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


# -- pitfall 3: STARTTLS discards pipelined plaintext and resets the session ------------------
@implementer(ITLSTransport)
class TLSStringTransport(StringTransport):
    tls_started = False

    def startTLS(self, ctx, normal=True):
        self.tls_started = True


def tls_conn(h: Harness):
    from twisted.internet.address import IPv4Address

    addr = IPv4Address("TCP", "127.0.0.9", 40000)
    proto = h.factory.buildProtocol(addr)
    t = TLSStringTransport(peerAddress=addr)
    proto.makeConnection(t)
    from helpers import Conn

    return Conn(proto, t)


def test_starttls_discards_pipelined_commands_and_resets(tmp_path):
    h = Harness(tmp_path, tls_context=object())
    c = tls_conn(h)
    c.read()
    assert any(line.endswith("STARTTLS") for line in c.send(b"EHLO c.test\r\n"))
    lines = c.send(b"STARTTLS\r\nMAIL FROM:<s@sender.test>\r\nDATA\r\n")
    assert lines == ["220 2.0.0 Ready to start TLS"]
    assert c.transport.tls_started
    # The MAIL pipelined in plain text after STARTTLS was never executed.
    assert c.codes(b"RCPT TO:<u@example.com>\r\n") == [503]
    ehlo = c.send(b"EHLO c.test\r\n")
    assert not any("STARTTLS" in line for line in ehlo)
    assert c.codes(b"STARTTLS\r\n") == [503]


def test_starttls_without_certificate_is_refused(h):
    c = h.connect()
    c.read()
    assert "STARTTLS" not in " ".join(c.send(b"EHLO c.test\r\n"))
    assert c.send(b"STARTTLS\r\n")[0].startswith("454 4.7.0")


# -- pitfall 4: AUTH only over TLS, only with accounts; malformed input answered ---------------
HASH = "$2b$04$" + "a" * 53  # format only; passwords are checked by the injected checker


def auth_harness(tmp_path, ok_user="relay-user", ok_pass="secret"):
    data = base_config(tmp_path)
    import bcrypt

    data["accounts"] = [
        {"username": ok_user, "password_hash": bcrypt.hashpw(b"x", bcrypt.gensalt(4)).decode()}
    ]
    check = lambda u, p: defer.succeed(u == ok_user and p == ok_pass)  # noqa: E731
    return Harness(tmp_path, data, check_password=check, tls_context=object())


def test_auth_not_offered_or_accepted_before_tls(tmp_path):
    h = auth_harness(tmp_path)
    c = tls_conn(h)
    c.read()
    assert not any("AUTH" in line for line in c.send(b"EHLO c.test\r\n"))
    assert c.send(b"AUTH PLAIN AHJlbGF5LXVzZXIAc2VjcmV0\r\n")[0].startswith("538 5.7.11")


def test_auth_plain_and_login_after_tls(tmp_path):
    import base64

    h = auth_harness(tmp_path)
    c = tls_conn(h)
    c.send(b"EHLO c.test\r\nSTARTTLS\r\n")
    assert "AUTH PLAIN LOGIN" in c.send(b"EHLO c.test\r\n")[-1]
    bad = base64.b64encode(b"\0relay-user\0wrong")
    assert c.send(b"AUTH PLAIN " + bad + b"\r\n")[0].startswith("535 5.7.8")
    assert c.send(b"AUTH PLAIN !!!notbase64\r\n")[0].startswith("501 5.5.2")
    assert c.send(b"AUTH PLAIN " + base64.b64encode(b"no-nuls") + b"\r\n")[0].startswith("501")
    assert c.send(b"AUTH CRAM-MD5\r\n")[0].startswith("504 5.5.4")
    assert c.send(b"AUTH LOGIN\r\n") == ["334 VXNlcm5hbWU6"]
    assert c.send(base64.b64encode(b"relay-user") + b"\r\n") == ["334 UGFzc3dvcmQ6"]
    assert c.send(base64.b64encode(b"secret") + b"\r\n")[0].startswith("235 2.7.0")
    assert c.proto.authenticated
    assert c.send(b"AUTH PLAIN x\r\n")[0].startswith("503 5.5.1")
    # Authenticated: relaying to an external domain is allowed by the default ranges.
    assert c.codes(b"MAIL FROM:<s@sender.test>\r\nRCPT TO:<x@elsewhere.test>\r\n") == [250, 250]


def test_auth_abort_and_plain_with_empty_initial_response(tmp_path):
    h = auth_harness(tmp_path)
    c = tls_conn(h)
    c.send(b"EHLO c.test\r\nSTARTTLS\r\nEHLO c.test\r\n")
    assert c.send(b"AUTH PLAIN\r\n") == ["334 "]
    assert c.send(b"*\r\n")[0].startswith("501 5.7.0")
    assert c.codes(b"NOOP\r\n") == [250]


def test_auth_without_accounts_is_not_available(h):
    c = h.connect()
    c.read()
    assert c.send(b"AUTH PLAIN AGEAYg==\r\n")[0].startswith("502 5.5.1")


# -- pitfall 5: line limits and bounded buffers ----------------------------------------------
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


# -- pitfall 6: bare CR / LF, SMTP smuggling ------------------------------------------------
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


# -- pitfall 7: extensions and required commands ---------------------------------------------
def test_ehlo_extensions_and_basic_commands(h):
    c = h.connect()
    greeting = c.read()
    assert greeting == ["220 mx2.example.net ESMTP mxbackup"]
    ehlo = c.send(b"EHLO c.test\r\n")
    assert ehlo[0].startswith("250-mx2.example.net Hello c.test")
    assert {"250-PIPELINING", "250-SIZE 26214400", "250-8BITMIME"} <= set(ehlo)
    assert ehlo[-1] == "250 ENHANCEDSTATUSCODES"
    assert c.send(b"NOOP\r\n") == ["250 2.0.0 Ok"]
    assert c.send(b"VRFY someone\r\n")[0].startswith("252 2.1.5")
    assert c.send(b"HELP\r\n")[0].startswith("214 2.0.0")
    assert c.send(b"RSET\r\n")[0].startswith("250 2.0.0")
    assert c.send(b"FROB\r\n")[0].startswith("500 5.5.2")
    assert c.send(b"QUIT\r\n") == ["221 2.0.0 Bye"]


def test_size_parameter(h):
    c = h.connect()
    c.read()
    assert c.send(b"MAIL FROM:<s@x.test> SIZE=99999999999\r\n")[0].startswith("552 5.3.4")
    assert c.send(b"MAIL FROM:<s@x.test> SIZE=abc\r\n")[0].startswith("501 5.5.4")
    assert c.send(b"MAIL FROM:<s@x.test> FOO=1\r\n")[0].startswith("555 5.5.4")
    assert c.codes(b"MAIL FROM:<s@x.test> SIZE=1000 BODY=8BITMIME\r\n") == [250]
    assert c.send(b"MAIL FROM:<s@x.test>\r\n")[0].startswith("503 5.5.1")


def test_sequence_errors(h):
    c = h.connect()
    c.read()
    assert c.send(b"RCPT TO:<u@example.com>\r\n")[0].startswith("503 5.5.1")
    assert c.send(b"DATA\r\n")[0].startswith("503 5.5.1")
    c.send(b"MAIL FROM:<>\r\n")
    assert c.send(b"DATA\r\n")[0].startswith("554 5.5.1")
    assert c.send(b"HELO\r\n")[0].startswith("501 5.5.4")


def test_every_reply_code_matches_its_enhanced_status():

    for reply in replies.ALL:
        if reply.status:
            assert reply.status[0] == str(reply.code)[0], reply
            assert re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", reply.status), reply
        else:
            assert reply.code in (220, 250, 334, 354), reply


def test_too_many_errors_disconnects(h):
    c = h.connect()
    c.read()
    lines = c.send(b"FROB\r\n" * 25)
    assert lines[-1].startswith("421 4.7.0")
    assert c.transport.disconnecting


# -- pitfall 9: idle timeout reaches the protocol (driven by Clock) ---------------------------
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


# -- pitfall 10: one spool file per transaction ---------------------------------------------
def test_one_file_per_transaction_with_many_recipients(h, tmp_path):
    c = h.connect()
    rcpts = b"".join(b"RCPT TO:<u%d@example.com>\r\n" % i for i in range(5))
    c.send(b"EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\n" + rcpts + b"DATA\r\n")
    c.send(MSG)
    assert len(spool_files(tmp_path / "spool", "new")) == 1
    (env,) = h.woken
    assert [r.address for r in env.recipients] == [f"u{i}@example.com" for i in range(5)]


def test_connection_limits(tmp_path):
    data = base_config(tmp_path, max_connections=3, max_connections_per_ip=2)
    h = Harness(tmp_path, data)
    a, b = h.connect("127.0.0.9"), h.connect("127.0.0.9")
    third = h.connect("127.0.0.9")
    assert third.read() == ["421 4.7.0 Too many connections from your address, try again later"]
    other = h.connect("127.0.0.10")
    assert other.read()[0].startswith("220")
    assert h.connect("127.0.0.11").read()[0].startswith("421 4.7.0")
    a.proto.connectionLost(None)
    assert h.connect("127.0.0.9").read()[0].startswith("220")
    assert b


def test_starttls_inside_a_transaction_is_refused(tmp_path):
    h = Harness(tmp_path, tls_context=object())
    c = tls_conn(h)
    c.send(b"EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\n")
    assert c.send(b"STARTTLS\r\n")[0].startswith("503 5.5.1")
    assert not c.transport.tls_started


# -- findings of the inbound review, each pinned --------------------------------------------
def test_password_longer_than_bcrypt_limit_is_refused_cleanly(tmp_path):
    """bcrypt refuses > 72 bytes: the check must say no, and the session stay usable."""
    import base64

    import bcrypt

    from mxbackup.service import make_password_check

    data = base_config(tmp_path)
    data["accounts"] = [
        {"username": "u", "password_hash": bcrypt.hashpw(b"pw", bcrypt.gensalt(4)).decode()}
    ]
    from mxbackup import config as config_module

    cfg = config_module.parse(data, "t.yaml")

    class SyncReactor:
        def getThreadPool(self):
            return None

    import twisted.internet.threads as threads_mod

    real = threads_mod.deferToThreadPool
    threads_mod.deferToThreadPool = lambda r, p, f, *a: defer.maybeDeferred(f, *a)
    try:
        check = make_password_check(SyncReactor(), cfg)
        h = Harness(tmp_path, data, check_password=check, tls_context=object())
        c = tls_conn(h)
        c.send(b"EHLO c.test\r\nSTARTTLS\r\nEHLO c.test\r\n")
        long_pw = base64.b64encode(b"\0u\0" + b"a" * 80)
        assert c.send(b"AUTH PLAIN " + long_pw + b"\r\n")[0].startswith("535 5.7.8")
        assert c.codes(b"NOOP\r\n") == [250]
        ok = base64.b64encode(b"\0u\0pw")
        assert c.send(b"AUTH PLAIN " + ok + b"\r\n")[0].startswith("235")
    finally:
        threads_mod.deferToThreadPool = real


def test_failing_password_check_ends_the_exchange(tmp_path):
    import base64

    h = auth_harness(tmp_path)
    h.factory.check_password = lambda u, p: defer.fail(RuntimeError("boom"))
    c = tls_conn(h)
    c.send(b"EHLO c.test\r\nSTARTTLS\r\nEHLO c.test\r\n")
    lines = c.send(b"AUTH PLAIN " + base64.b64encode(b"\0relay-user\0secret") + b"\r\n")
    assert lines[0].startswith("451 4.3.0")
    assert c.codes(b"NOOP\r\n") == [250]


def test_plain_with_foreign_authorization_identity_is_refused(tmp_path):
    import base64

    h = auth_harness(tmp_path)
    c = tls_conn(h)
    c.send(b"EHLO c.test\r\nSTARTTLS\r\nEHLO c.test\r\n")
    resp = base64.b64encode(b"someone-else\0relay-user\0secret")
    assert c.send(b"AUTH PLAIN " + resp + b"\r\n")[0].startswith("501 5.5.2")
    same = base64.b64encode(b"relay-user\0relay-user\0secret")
    assert c.send(b"AUTH PLAIN " + same + b"\r\n")[0].startswith("235")


def test_over_long_sasl_line_ends_the_exchange(tmp_path):
    h = auth_harness(tmp_path)
    c = tls_conn(h)
    c.send(b"EHLO c.test\r\nSTARTTLS\r\nEHLO c.test\r\n")
    assert c.send(b"AUTH LOGIN\r\n")[0].startswith("334")
    assert c.send(b"A" * 13000 + b"\r\n")[0].startswith("501 5.5.2")
    assert c.codes(b"NOOP\r\n") == [250]
    assert c.send(b"AUTH LOGIN\r\n")[0].startswith("334")
    assert c.codes(b"QQ" * 400 + b"\r\n") == [334]  # 800 octets: allowed in SASL (not 512)


def test_recipients_beyond_the_limit_do_not_end_the_session(tmp_path):
    data = base_config(tmp_path, max_recipients=5)
    h = Harness(tmp_path, data)
    c = h.connect()
    c.read()
    rcpts = b"".join(b"RCPT TO:<u%d@example.com>\r\n" % i for i in range(30))
    lines = c.send(b"EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\n" + rcpts + b"DATA\r\n")
    codes = final_codes(lines)
    assert codes[2:7] == [250] * 5 and codes[7:32] == [452] * 25 and codes[-1] == 354
    assert final_codes(c.send(MSG)) == [250]


def test_stuffed_line_of_998_octets_of_text_is_accepted(h, tmp_path):
    c = h.connect()
    c.send(TXN)
    lines = c.send(b"Subject: x\r\n\r\n." + b"y" * 998 + b"\r\n.\r\n")
    assert final_codes(lines) == [250]
    c.send(TXN)
    assert final_codes(c.send(b"Subject: x\r\n\r\n." + b"y" * 999 + b"\r\n.\r\n")) == [500]


def test_long_line_scan_is_linear():
    """A body of 998-octet lines is scanned in linear time (the regex anchors at line starts)."""
    import time

    from mxbackup.inbound.datastream import DataReader

    block = (b"z" * 998 + b"\r\n") * 2000  # 2 MB
    reader = DataReader(lambda b: None, 10**9, 50)
    reader.feed(b"Subject: x\r\n\r\n")
    start = time.process_time()
    reader.feed(block)
    # Quadratic scanning took ~0.6 s here; linear takes a few ms.  Generous bound, CPU time.
    assert time.process_time() - start < 0.2
    assert reader.error is None


def test_wakeup_failure_does_not_send_a_second_reply(h):
    def boom(envelope):
        raise RuntimeError("scheduler bug")

    h.factory.wakeup = boom
    c = h.connect()
    c.send(TXN)
    lines = c.send(MSG + b"NOOP\r\n")
    assert final_codes(lines) == [250, 250]
    assert "queued as" in lines[0]


def test_helo_argument_echo_is_sanitised(h):
    c = h.connect()
    c.read()
    line = c.send(b"EHLO h(e)l\\lo\x01\x7f\r\n")[0]
    assert line == "250-mx2.example.net Hello h?e?l?lo?? [127.0.0.9]"


def test_data_without_mail_names_the_missing_command(h):
    c = h.connect()
    c.read()
    assert c.send(b"DATA\r\n") == ["503 5.5.1 Need MAIL before DATA"]


def test_connection_that_does_not_close_is_aborted(h):
    c = h.connect()
    c.read()
    h.clock.advance(301)  # idle timeout: 421 and close
    assert c.transport.disconnecting
    aborted = []
    c.transport.abortConnection = lambda: aborted.append(True)
    h.clock.advance(11)  # still not gone (e.g. stuck in a TLS handshake): aborted
    assert aborted == [True]


# -- our override: a reply is one write (the direct socket path: tests/test_fastwrite.py)
def test_multiline_reply_is_one_write(h):
    c = h.connect()
    c.read()
    writes: list[bytes] = []
    c.transport.write = writes.append
    c.proto.send_lines(250, ["a", "b", "c"])
    assert writes == [b"250-a\r\n250-b\r\n250 c\r\n"]
