"""STARTTLS (pitfall 3): pipelined plaintext discarded, the session reset."""

from __future__ import annotations

from inbound_case import MSG, TXN, final_codes

from helpers import Harness, spool_files
from mxbackup import replies
from mxbackup.inbound.starttls import tls_description


def test_starttls_discards_pipelined_commands_and_resets(tmp_path):
    h = Harness(tmp_path, tls_context=object())
    c = h.connect_tls()
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


def test_starttls_inside_a_transaction_is_refused(tmp_path):
    h = Harness(tmp_path, tls_context=object())
    c = h.connect_tls()
    c.send(b"EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\n")
    assert c.send(b"STARTTLS\r\n")[0].startswith("503 5.5.1")
    assert not c.transport.tls_started


def test_starttls_takes_no_argument(tmp_path):
    c = Harness(tmp_path, tls_context=object()).connect_tls()
    c.read()
    assert c.send(b"STARTTLS now\r\n") == [str(replies.BAD_SYNTAX)]
    assert not c.transport.tls_started


def test_received_header_after_starttls_says_esmtps(tmp_path):
    h = Harness(tmp_path, tls_context=object())
    c = h.connect_tls()
    c.send(b"EHLO c.test\r\nSTARTTLS\r\n")
    c.send(TXN)
    assert final_codes(c.send(MSG)) == [250]
    (name,) = spool_files(tmp_path / "spool", "new")
    assert b"with ESMTPS id" in (tmp_path / "spool" / "new" / name).read_bytes()


class Handle:
    def get_protocol_version_name(self) -> str:
        return "TLSv1.3"

    def get_cipher_name(self) -> str:
        return "TLS_AES_256_GCM_SHA384"


class TLSTransport:
    def getHandle(self) -> Handle:
        return Handle()


def test_tls_description():
    assert tls_description(TLSTransport()) == " (TLSv1.3 TLS_AES_256_GCM_SHA384)"
    assert tls_description(object()) == ""
