"""The inbound server's behaviours (tests/inbound/) again, on real sockets, real twistd."""

from __future__ import annotations

import base64
import smtplib
import socket
import ssl
import subprocess
import sys

import bcrypt
import pytest

from helpers import ROOT, TWISTD, Twistd, base_config, spool_files, write_config
from tlsutil import make_cert

BODY = b"Subject: wire\r\n\r\nhello\r\n"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wire")
    cert, key = make_cert(tmp)
    data = base_config(tmp, tls={"certificate": str(cert), "key": str(key)})
    data["accounts"] = [
        {
            "username": "relay-user",
            "password_hash": bcrypt.hashpw(b"s3cret", bcrypt.gensalt(4)).decode(),
        }
    ]
    t = Twistd(write_config(tmp, data), tmp / "twistd.log").start()
    t.tmp = tmp
    yield t
    t.stop()


def raw(server, ip="127.0.0.9") -> socket.socket:
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10, source_address=(ip, 0))
    assert s.recv(1024).startswith(b"220 ")
    return s


def read_replies(s: socket.socket, count: int) -> list[bytes]:
    """Read until ``count`` final reply lines arrived."""
    data = b""
    while sum(1 for line in data.split(b"\r\n") if line[3:4] == b" ") < count:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    return [line for line in data.split(b"\r\n") if line[3:4] == b" "]


def test_pipelined_transaction_with_dot_and_quit_in_one_packet(server):
    s = raw(server)
    s.sendall(
        b"EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n"
        + BODY
        + b".\r\nQUIT\r\n"
    )
    lines = read_replies(s, 6)
    assert [line[:3] for line in lines] == [b"250", b"250", b"250", b"354", b"250", b"221"]
    assert b"queued as" in lines[4]
    qid = lines[4].rsplit(b" ", 1)[1].decode()
    assert qid in spool_files(server.tmp / "spool", "new")
    assert s.recv(10) == b""  # closed after 221
    s.close()


def test_starttls_with_smtplib_then_auth_and_relay(server):
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with server.smtp("127.0.0.9") as c:
        c.ehlo("c.test")
        assert c.has_extn("starttls") and not c.has_extn("auth")
        code, _ = c.starttls(context=ctx)
        assert code == 220
        c.ehlo("c.test")
        assert not c.has_extn("starttls")
        assert c.esmtp_features["auth"].split() == ["PLAIN", "LOGIN"]
        with pytest.raises(smtplib.SMTPAuthenticationError) as e:
            c.login("relay-user", "wrong")
        assert e.value.smtp_code == 535
        c.login("relay-user", "s3cret")
        refused = c.sendmail("s@sender.test", ["x@elsewhere.test"], BODY)
        assert refused == {}
    assert "s3cret" not in server.logtext()  # never a secret in the log
    assert "with ESMTPSA" in "".join(
        (server.tmp / "spool" / "new" / n).read_text(errors="replace")
        for n in spool_files(server.tmp / "spool", "new")
    )


def test_plaintext_after_starttls_is_not_executed(server):
    s = raw(server)
    s.sendall(b"EHLO c.test\r\n")
    read_replies(s, 1)
    s.sendall(b"STARTTLS\r\nMAIL FROM:<evil@x.test>\r\nRCPT TO:<u@example.com>\r\n")
    assert read_replies(s, 1) == [b"220 2.0.0 Ready to start TLS"]
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    tls = ctx.wrap_socket(s, server_hostname="mx2.example.net")
    tls.sendall(b"RCPT TO:<u@example.com>\r\n")
    assert read_replies(tls, 1)[0].startswith(b"503 5.5.1")  # no MAIL survived the handshake
    tls.close()


def test_auth_before_tls_is_refused_on_the_wire(server):
    s = raw(server)
    s.sendall(b"EHLO c.test\r\nAUTH PLAIN " + base64.b64encode(b"\0relay-user\0s3cret") + b"\r\n")
    assert read_replies(s, 2)[1].startswith(b"538 5.7.11")
    s.close()


def test_slow_client_sending_one_byte_at_a_time(server):
    s = raw(server)
    for byte in b"EHLO c.test\r\nNOOP\r\n":
        s.send(bytes([byte]))
    assert read_replies(s, 2)[1].startswith(b"250 2.0.0")
    s.close()


def test_check_config_command_and_fail_fast(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "server:\n  hostname: mx.example.net\n  listen: [tcp:0]\n  spool: s\n  port: 7\n"
        "routes: []\n"
    )
    out = subprocess.run(
        [*TWISTD, "--nodaemon", "--pidfile=", "mxbackup", "--config", str(bad)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert out.returncode != 0
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert lines == [f"mxbackup: {bad}: server.port: unknown key"]
    ok = subprocess.run(
        [sys.executable, "-m", "mxbackup.ops.cli", "check-config", str(ROOT / "etc" / "mx.yaml")],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert ok.returncode == 0 and ok.stdout.startswith("OK")
