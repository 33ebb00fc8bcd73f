"""SMTPUTF8, DSN and CHUNKING into the real server (twistd), on real sockets: raw sockets,
smtplib and swaks as senders, the stored message and envelope checked on disk."""

from __future__ import annotations

import json
import re
import shutil
import smtplib
import socket
import subprocess

import pytest

from helpers import Twistd, base_config, spool_files, write_config

START = b"EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\nRCPT TO:<u@example.com>\r\n"
MAX_SIZE = 100_000
CLIENT = ("127.0.0.9", 0)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("modern")
    data = base_config(tmp, max_message_size=MAX_SIZE)
    data["routes"] += [
        {"domain": "bücher.example", "target_host": "127.0.0.1", "port": 9},
        {
            "domain": "xn--strae-oqa.example",
            "target_host": "127.0.0.1",
            "port": 9,
            "addresses": ["jürgen@straße.example"],
        },
    ]
    t = Twistd(write_config(tmp, data), tmp / "twistd.log").start()
    t.spool = tmp / "spool"
    yield t
    t.stop()


def raw(server) -> socket.socket:
    # From 127.0.0.9: not the loopback address that the default ranges let relay.
    s = socket.create_connection(("127.0.0.1", server.port), timeout=10, source_address=CLIENT)
    assert s.recv(1024).startswith(b"220 ")
    return s


def replies_for(s: socket.socket, data: bytes, count: int) -> list[bytes]:
    """Send ``data``; read until ``count`` final reply lines arrived."""
    s.sendall(data)
    buf = b""
    while sum(1 for line in buf.split(b"\r\n") if line[3:4] == b" ") < count:
        chunk = s.recv(65536)
        if not chunk:
            break
        buf += chunk
    return [line for line in buf.split(b"\r\n") if line[3:4] == b" "]


def queued(line: bytes) -> str:
    m = re.search(rb"queued as ([0-9A-F]+)", line)
    assert m, line
    return m.group(1).decode()


def envelope(server, qid: str) -> dict:
    return json.loads((server.spool / "env" / qid).read_bytes())


def stored(server, qid: str) -> bytes:
    return (server.spool / "new" / qid).read_bytes()


def after_received(message: bytes) -> bytes:
    lines = message.split(b"\r\n")
    i = 1
    while lines[i].startswith(b"\t"):
        i += 1
    return b"\r\n".join(lines[i:])


# -- EHLO ----------------------------------------------------------------------------------
def test_ehlo_offers_smtputf8_dsn_chunking(server):
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10, source_address=CLIENT) as c:
        c.ehlo("c.test")
        for ext in ("smtputf8", "dsn", "chunking", "8bitmime", "pipelining"):
            assert c.has_extn(ext), ext
        assert not c.has_extn("binarymime")


# -- SMTPUTF8 --------------------------------------------------------------------------------
def test_smtputf8_with_smtplib_is_queued_with_the_flag_and_addresses_as_sent(server):
    with smtplib.SMTP("127.0.0.1", server.port, timeout=10, source_address=CLIENT) as c:
        c.ehlo("c.test")
        refused = c.sendmail(
            "Jürgen@bücher.example",
            ["ü@bücher.example", "jürgen@xn--strae-oqa.example", "jürgen@straße.example"],
            "Subject: grüße\r\n\r\nhallo\r\n".encode(),
            mail_options=["SMTPUTF8"],
        )
        assert refused == {}
    qid = sorted(spool_files(server.spool, "env"))[-1]
    env = envelope(server, qid)
    assert env["sender"] == "Jürgen@bücher.example"
    assert env["params"]["SMTPUTF8"] is None
    # the same mailbox in U-labels and A-labels is one recipient (the first spelling kept)
    assert [(r["address"], r["route"]) for r in env["recipients"]] == [
        ("ü@bücher.example", "xn--bcher-kva.example"),
        ("jürgen@xn--strae-oqa.example", "xn--strae-oqa.example"),
    ]
    message = stored(server, qid)
    assert b"with UTF8SMTP id " + qid.encode() in message
    assert after_received(message) == "Subject: grüße\r\n\r\nhallo\r\n".encode()


@pytest.mark.parametrize(
    ("command", "expected"),
    [
        ("RCPT TO:<ü@bücher.example>", b"553 5.6.7"),  # no SMTPUTF8 on MAIL
        (b"RCPT TO:<\xff@example.com>", b"553 5.6.7"),
    ],
)
def test_non_ascii_without_smtputf8_is_553_5_6_7(server, command, expected):
    s = raw(server)
    line = command if isinstance(command, bytes) else command.encode()
    got = replies_for(s, b"EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\n" + line + b"\r\n", 3)
    assert got[-1].startswith(expected), got
    s.close()


@pytest.mark.parametrize(
    ("rcpt", "expected"),
    [
        ("u＠evil.test@bücher.example", b"550 5.7.1"),  # FULLWIDTH COMMERCIAL AT
        ("u﹫evil.test@bücher.example", b"550 5.7.1"),  # SMALL COMMERCIAL AT
        ("u％evil.test@bücher.example", b"550 5.7.1"),  # FULLWIDTH PERCENT SIGN
        ("evil.test！u@bücher.example", b"550 5.7.1"),  # FULLWIDTH EXCLAMATION MARK
        ('"ü@evil.test"@bücher.example', b"550 5.7.1"),
        ("ü%evil.test@bücher.example", b"550 5.7.1"),
        ("@relay.test:ü@bücher.example", b"550 5.7.1"),
        ("ü@[127.0.0.1]", b"550 5.7.1"),
        ("ü@evil.test", b"550 5.7.1 Relay access denied"),
        ("ü@bücher．example", b"553 5.1.3"),  # a fullwidth full stop is no dot
        ("ü@bu\u0308cher.example", b"553 5.1.3"),  # not NFC
        ("ü\u202e@bücher.example", b"553 5.1.3"),  # a bidi override
        (b"\xc3\x28@b\xc3\xbccher.example", b"553 5.1.3"),  # invalid UTF-8
        (b"u@b\xfccher.example", b"553 5.1.3"),  # Latin-1, not UTF-8
    ],
)
def test_utf8_routing_tricks_and_bad_utf8_are_refused(server, rcpt, expected):
    s = raw(server)
    line = rcpt if isinstance(rcpt, bytes) else rcpt.encode()
    got = replies_for(
        s, b"EHLO c.test\r\nMAIL FROM:<s@sender.test> SMTPUTF8\r\nRCPT TO:<" + line + b">\r\n", 3
    )
    assert got[-1].startswith(expected), got
    assert replies_for(s, b"NOOP\r\n", 1) == [b"250 2.0.0 Ok"]  # no traceback, session goes on
    s.close()
    assert "Traceback" not in server.logtext()


# -- DSN -------------------------------------------------------------------------------------
def test_dsn_parameters_are_stored_in_the_envelope(server):
    s = raw(server)
    got = replies_for(
        s,
        b"EHLO c.test\r\nMAIL FROM:<s@sender.test> RET=hdrs ENVID=QQ+2B1<x>\r\n"
        b"RCPT TO:<a@example.com> NOTIFY=delay,success ORCPT=rfc822;a+40example.com\r\n"
        b"RCPT TO:<b@example.com> NOTIFY=never\r\nRCPT TO:<c@example.com>\r\n"
        b"DATA\r\nSubject: dsn\r\n\r\nx\r\n.\r\n",
        7,
    )
    assert [line[:3] for line in got] == [b"250"] * 5 + [b"354", b"250"]
    env = envelope(server, queued(got[-1]))
    assert env["params"] == {"RET": "HDRS", "ENVID": "QQ+2B1<x>"}
    assert [r["params"] for r in env["recipients"]] == [
        {"NOTIFY": "SUCCESS,DELAY", "ORCPT": "rfc822;a+40example.com"},
        {"NOTIFY": "NEVER"},
        {},
    ]
    s.close()


@pytest.mark.parametrize(
    ("mail", "rcpt", "expected"),
    [
        (b" RET=FULL RET=HDRS", b"", b"501 5.5.4"),
        (b" ENVID=a+zz", b"", b"501 5.5.4"),
        (b" ENVID=" + b"e" * 101, b"", b"501 5.5.4"),
        (b" RET=NOPE", b"", b"501 5.5.4"),
        (b" FOO=1", b"", b"555 5.5.4"),
        (b"", b" NOTIFY=NEVER,SUCCESS", b"501 5.5.4"),
        (b"", b" NOTIFY=DELAY NOTIFY=DELAY", b"501 5.5.4"),
        (b"", b" NOTIFY=SUCCESS,SUCCESS", b"501 5.5.4"),
        (b"", b" ORCPT=nosemicolon", b"501 5.5.4"),
        (b"", b" ORCPT=rfc822;a+4", b"501 5.5.4"),
        (b"", b" ORCPT=rfc822;" + b"o" * 494, b"501 5.5.4"),
        (b"", b" BAR=1", b"555 5.5.4"),
    ],
)
def test_bad_dsn_parameters(server, mail, rcpt, expected):
    s = raw(server)
    got = replies_for(
        s,
        b"EHLO c.test\r\nMAIL FROM:<s@sender.test>" + mail + b"\r\n",
        2,
    )
    if not rcpt:
        assert got[-1].startswith(expected), got
    else:
        assert got[-1].startswith(b"250")
        got = replies_for(s, b"RCPT TO:<u@example.com>" + rcpt + b"\r\n", 1)
        assert got[-1].startswith(expected), got
    s.close()


# -- CHUNKING --------------------------------------------------------------------------------
def test_bdat_pipelined_with_commands_inside_a_chunk(server):
    s = raw(server)
    one = b"Subject: bdat\r\n\r\nQUIT\r\nRSET\r\n"
    two = b".dot stays\r\nend\r\n"
    got = replies_for(
        s,
        START
        + b"BDAT %d\r\n" % len(one)
        + one
        + b"BDAT %d LAST\r\n" % len(two)
        + two
        + b"NOOP\r\n",
        6,
    )
    assert got[3] == b"250 2.0.0 %d octets received" % len(one)
    assert after_received(stored(server, queued(got[4]))) == one + two
    assert got[5] == b"250 2.0.0 Ok"
    s.close()


def test_bdat_without_transaction_consumes_its_octets(server):
    s = raw(server)
    chunk = b"\r\nQUIT\r\nRSET\r\n"
    got = replies_for(s, b"EHLO c.test\r\nBDAT %d LAST\r\n" % len(chunk) + chunk + b"NOOP\r\n", 3)
    assert got[1:] == [b"503 5.5.1 Need MAIL before BDAT", b"250 2.0.0 Ok"]
    s.close()


def test_bdat_0_last_bad_syntax_and_data_after_bdat(server):
    s = raw(server)
    got = replies_for(s, START + b"BDAT x\r\nBDAT 14\r\nSubject: z\r\n\r\nDATA\r\n", 6)
    assert got[3].startswith(b"501 5.5.4") and got[4].startswith(b"250 2.0.0 14 octets")
    assert got[5].startswith(b"503 5.5.1")
    got = replies_for(s, b"BDAT 0 LAST\r\n", 1)
    assert after_received(stored(server, queued(got[0]))) == b"Subject: z\r\n\r\n"
    s.close()


def test_bdat_over_the_size_limit_is_consumed_and_fails_the_transaction(server):
    s = raw(server)
    big = b"y" * (MAX_SIZE + 10)
    before = spool_files(server.spool, "new")
    got = replies_for(
        s, START + b"BDAT %d\r\n" % len(big) + big + b"BDAT 6 LAST\r\nQUIT\r\nNOOP\r\n", 6
    )
    assert got[3].startswith(b"552 5.3.4") and got[4].startswith(b"503 5.5.1")
    assert got[5] == b"250 2.0.0 Ok"
    assert spool_files(server.spool, "new") == before
    s.close()


def test_bdat_bare_lf_is_refused_like_data(server):
    s = raw(server)
    text = b"Subject: x\r\n\r\na\nb\r\n"
    got = replies_for(s, START + b"BDAT %d LAST\r\n" % len(text) + text, 4)
    assert got[3].startswith(b"554 5.6.0")
    s.close()


def test_bdat_and_data_store_the_same_file(server):
    message = b"Subject: same\r\n\r\n.starts with a dot\r\n..two\r\nend\r\n"
    stuffed = message.replace(b"\r\n.", b"\r\n..")
    s = raw(server)
    got = replies_for(s, START + b"DATA\r\n" + stuffed + b".\r\n", 5)
    by_data = stored(server, queued(got[4]))
    got = replies_for(
        s,
        b"MAIL FROM:<s@sender.test>\r\nRCPT TO:<u@example.com>\r\n"
        + b"".join(b"BDAT 7\r\n" + message[i : i + 7] for i in range(0, len(message), 7))
        + b"BDAT 0 LAST\r\n",
        3 + len(range(0, len(message), 7)),
    )
    assert after_received(stored(server, queued(got[-1]))) == after_received(by_data)
    s.close()


# -- swaks as a real sender -----------------------------------------------------------------
SWAKS = shutil.which("swaks")


@pytest.mark.skipif(SWAKS is None, reason="swaks is not installed (apt install swaks)")
@pytest.mark.parametrize("pipeline", [True, False], ids=["pipeline", "lockstep"])
def test_swaks_with_smtputf8_and_dsn_parameters(server, tmp_path, pipeline):
    """swaks (20201014) has no options for MAIL/RCPT parameters; it writes --from and --to
    between <> (splitting --to at commas), so the parameters ride in the address argument:
    ``a> SMTPUTF8 ENVID=x<`` ends up as ``<a> SMTPUTF8 ENVID=x<>`` on the wire (``<>`` are
    valid xtext)."""
    body = tmp_path / "body.eml"
    body.write_bytes("Body über alles\r\n".encode())
    before = set(spool_files(server.spool, "env"))
    result = subprocess.run(
        [
            SWAKS, "--server", f"127.0.0.1:{server.port}", "--helo", "client.test",
            "--local-interface", "127.0.0.9",
            "--timeout", "10",
            "--from", "jürgen@bücher.example> SMTPUTF8 RET=HDRS ENVID=swaks+2B1<",
            "--to", "ü@bücher.example> NOTIFY=delay ORCPT=rfc822;u+40x<",
            "--body", f"@{body}",
            *(["--pipeline"] if pipeline else []),
        ],
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    out = (result.stdout + result.stderr).decode("utf-8", "replace")
    assert result.returncode == 0, out
    (qid,) = set(spool_files(server.spool, "env")) - before
    env = envelope(server, qid)
    assert env["sender"] == "jürgen@bücher.example"
    assert env["params"] == {"SMTPUTF8": None, "RET": "HDRS", "ENVID": "swaks+2B1<>"}
    (rcpt,) = env["recipients"]
    assert rcpt["address"] == "ü@bücher.example"
    assert rcpt["params"] == {"NOTIFY": "DELAY", "ORCPT": "rfc822;u+40x<>"}
    assert "\r\n\r\nBody über alles\r\n".encode() in stored(server, qid)
