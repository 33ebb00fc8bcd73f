"""Issue 13 with Postfix 3.x on both sides of the real twistd (a private instance, as in
bench/; root needed, skipped without Postfix):

- Postfix's ``smtp`` client as a sender: smtplib -> Postfix smtpd (SMTPUTF8, DSN parameters)
  -> Postfix smtp -> mxbackup -> a recording primary (``tests/primaryproc.py``).
- Postfix as the primary: smtplib -> mxbackup -> Postfix smtpd (it offers SMTPUTF8 and DSN)
  -> its ``virtual`` delivery agent -> a maildir, whose file is checked.

One Postfix instance plays both parts: ``viamx.example`` is relayed to mxbackup (transport
map), ``pf.example`` is its own virtual mailbox domain.  It uses no DNS (bracketed
next hop) and writes its log to a file of its own.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import smtplib
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
from primaryproc import Primaries, wait_for

from helpers import Twistd, base_config, spool_files, write_config

SBIN = Path("/usr/sbin")
pytestmark = [
    pytest.mark.skipif(
        not (SBIN / "postfix").exists() or not shutil.which("postconf"),
        reason="Postfix is not installed (apt-get install postfix)",
    ),
    pytest.mark.skipif(os.geteuid() != 0, reason="a private Postfix instance needs root"),
]

MASTER_CF = """\
127.0.0.1:{port} inet n  -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       1       1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
compatibility_level = 3.6
config_directory = {etc}
queue_directory = {queue}
data_directory = {data}
meta_directory = /etc/postfix
myhostname = pf.test
mydomain = pf.test
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = viamx.example
# no DNS anywhere: everything that is neither relayed to mxbackup nor delivered here (the
# success notice Postfix sends for NOTIFY=SUCCESS) is discarded
transport_maps = inline:{{ viamx.example=relay:[127.0.0.1]:{mx_port},
    pf.example=virtual:, *=discard: }}
smtpd_peername_lookup = no
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtputf8_enable = yes
virtual_mailbox_domains = pf.example
virtual_mailbox_base = {mail}
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 1
maillog_file = {maillog}
maillog_file_prefixes = {maillog}
queue_run_delay = 1s
minimal_backoff_time = 1s
biff = no
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Postfix:
    def __init__(self, directory: Path, mx_port: int) -> None:
        self.dir = directory
        self.etc, self.queue, self.data = directory / "etc", directory / "queue", directory / "data"
        self.mail = directory / "mail"
        self.maillog = directory / "maillog"
        self.port = free_port()
        nobody = pwd.getpwnam("nobody")
        for d in (self.etc, self.queue, self.data, self.mail):
            d.mkdir(parents=True)
            d.chmod(0o755)
        shutil.chown(self.data, user="postfix")
        os.chown(self.mail, nobody.pw_uid, nobody.pw_gid)
        (self.etc / "main.cf").write_text(
            MAIN_CF.format(
                etc=self.etc,
                queue=self.queue,
                data=self.data,
                mail=self.mail,
                mx_port=mx_port,
                uid=nobody.pw_uid,
                gid=nobody.pw_gid,
                maillog=self.maillog,
            )
        )
        (self.etc / "master.cf").write_text(MASTER_CF.format(port=self.port))
        self.run("start")
        assert wait_for(self.listening, 30), self.log()

    def run(self, *args: str) -> None:
        result = subprocess.run(
            [str(SBIN / "postfix"), "-c", str(self.etc), *args],
            capture_output=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr.decode() + result.stdout.decode()

    def listening(self) -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", self.port)) == 0

    def log(self) -> str:
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""

    def maildir(self) -> list[bytes]:
        new = self.mail / "box" / "new"
        return [f.read_bytes() for f in sorted(new.iterdir())] if new.exists() else []

    def stop(self) -> None:
        with contextlib.suppress(AssertionError, subprocess.TimeoutExpired):
            self.run("stop")


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("modern-postfix")
    primaries = Primaries(
        tmp, [{"name": "modern", "extensions": ["PIPELINING", "8BITMIME", "DSN", "SMTPUTF8"]}]
    )
    mx_port = free_port()
    postfix: Postfix | None = None
    twistd: Twistd | None = None
    try:
        # mxbackup's port must be known to Postfix's transport map and Postfix's to our
        # route: pick mxbackup's first, then start Postfix, then mxbackup on it.
        # Postfix's daemons run as "postfix" and "nobody": pytest's tmp (0700, root) is no
        # place for their queue and maildir
        pf_dir = Path(tempfile.mkdtemp(prefix="mxbackup-pf-"))
        pf_dir.chmod(0o755)
        postfix = Postfix(pf_dir / "postfix", mx_port)
        data = base_config(tmp)
        data["server"]["listen"] = [f"tcp:{mx_port}:interface=127.0.0.1"]
        data["routes"] = [
            {
                "domain": "viamx.example",
                "target_host": "127.0.0.1",
                "port": primaries.ports["modern"],
            },
            {"domain": "pf.example", "target_host": "127.0.0.1", "port": postfix.port},
        ]
        data["delivery"] = {"tick": 0.05, "dns_servers": ["127.0.0.1:9"]}
        twistd = Twistd(write_config(tmp, data), tmp / "twistd.log").start()
        yield twistd, postfix, primaries, tmp / "spool"
    finally:
        if twistd is not None:
            twistd.stop()
        if postfix is not None:
            postfix.stop()
            shutil.rmtree(postfix.dir.parent, ignore_errors=True)
        primaries.stop()


def test_postfix_smtp_client_relays_smtputf8_and_dsn_through_mxbackup(world):
    twistd, postfix, primaries, spool = world
    message = "Subject: pf-sender grüße\r\nMessage-Id: <pf-sender@client.test>\r\n\r\nhallo\r\n"
    with smtplib.SMTP("127.0.0.1", postfix.port, timeout=10) as c:
        c.ehlo("client.test")
        assert c.has_extn("smtputf8") and c.has_extn("dsn")
        assert c.mail("jürgen@bücher.example", ["SMTPUTF8", "RET=HDRS", "ENVID=pf+2B1"])[0] == 250
        code, _ = c.rcpt(
            "ü@viamx.example", ["NOTIFY=SUCCESS,FAILURE", "ORCPT=utf-8;ü@viamx.example"]
        )
        assert code == 250
        assert c.data(message.encode())[0] == 250

    def arrived():
        return [t for t in primaries.transactions("modern") if "pf-sender" in t["message"]]

    got = wait_for(arrived, 30)
    assert got, postfix.log()[-3000:] + twistd.logtext()[-3000:]
    (t,) = got
    mail = t["mail"].encode("latin-1").decode()
    assert mail.startswith("MAIL FROM:<jürgen@bücher.example>")
    for param in (" SMTPUTF8", " RET=HDRS", " ENVID=pf+2B1"):
        assert param in mail, mail
    (rcpt,) = [
        c.encode("latin-1").decode()
        for c in primaries.commands("modern")
        if c.startswith("RCPT") and "viamx" in c
    ]
    # Postfix 3.7 writes a UTF-8 ORCPT in its utf-8-addr-xtext form (RFC 6533 3) even to an
    # SMTPUTF8 server; we pass it on as we got it
    assert (
        rcpt == "RCPT TO:<ü@viamx.example> NOTIFY=SUCCESS,FAILURE ORCPT=utf-8;\\x{FC}@viamx.example"
    )
    text = t["message"].encode("latin-1")
    assert text.startswith(b"Received: from pf.test")  # ours, on top of Postfix's
    assert text.endswith(b"\r\n\r\nhallo\r\n")
    assert "by mx2.example.net (mxbackup) with UTF8SMTP" in text.decode()


def test_postfix_as_primary_gets_smtputf8_and_dsn_parameters_and_delivers(world):
    twistd, postfix, primaries, spool = world
    message = (  # with Date and Message-Id, so that Postfix's cleanup adds none below
        "Subject: pf-primary grüße\r\nFrom: <jürgen@bücher.example>\r\n"
        "Date: Fri, 4 Dec 2026 12:00:00 +0000\r\nMessage-Id: <pf-primary@client.test>\r\n"
        "\r\nbody ü\r\n"
    )
    with smtplib.SMTP("127.0.0.1", twistd.port, timeout=10, source_address=("127.0.0.9", 0)) as c:
        c.ehlo("client.test")
        assert c.mail("jürgen@bücher.example", ["SMTPUTF8", "ENVID=mx+2B2"])[0] == 250
        assert c.rcpt("ü@pf.example", ["NOTIFY=SUCCESS", "ORCPT=utf-8;ü@pf.example"])[0] == 250
        assert c.data(message.encode())[0] == 250
    files = wait_for(postfix.maildir, 30)
    assert files, postfix.log()[-3000:] + twistd.logtext()[-3000:]
    (delivered,) = [f for f in files if b"pf-primary" in f]
    # Postfix's virtual agent adds Return-Path, Delivered-To, Received; then ours; then the
    # message as sent, UTF-8 intact.
    assert "Return-Path: <jürgen@bücher.example>".encode() in delivered
    assert "Delivered-To: ü@pf.example".encode() in delivered
    assert b"by mx2.example.net (mxbackup) with UTF8SMTP" in delivered
    assert message.encode().replace(b"\r\n", b"\n") in delivered.replace(b"\r\n", b"\n")
    # the DSN parameters were passed on: Postfix took over the duty to notify (it sends the
    # success notice for NOTIFY=SUCCESS itself), so we send none
    assert wait_for(lambda: "sender delivery status notification" in postfix.log(), 10), (
        postfix.log()[-3000:]
    )
    assert wait_for(lambda: spool_files(spool, "env") == [], 10)
    assert "action=relayed" not in twistd.logtext()
