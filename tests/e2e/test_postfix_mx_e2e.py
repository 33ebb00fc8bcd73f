"""The backup MX in the mail system, end to end with real software (issue 14, item 5).

A private Postfix instance is the SENDER: it delivers example.com by MX lookup, asking a DNS
server this test starts on loopback (MX 10 the primary, MX 20 mxbackup).  The primary, a
private Postfix instance storing into a maildir, is down: the sender falls back to us.  Then
the primary starts, and with mxbackup's DEFAULT delivery settings (``use_mx: true``: it finds
the primary by the same MX records) every message arrives there once, byte-intact, within
5 s of the primary taking connections.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import smtplib
import socket
import subprocess
import sys
import tempfile
import time
from email.utils import make_msgid
from pathlib import Path

import pytest
from postfixes import PRIMARY, SENDER, Postfix, available

from helpers import ROOT, Twistd, spool_files, write_config

why_not = available()
pytestmark = pytest.mark.skipif(why_not is not None, reason=why_not or "")

DNS_ADDRESS = "127.0.0.153"  # port 53: libc's resolver asks no other
PRIMARY_ADDRESS, BACKUP_ADDRESS, SENDER_ADDRESS = "127.0.0.2", "127.0.0.3", "127.0.0.4"
COUNT = 30


def free_port_on(*addresses: str) -> int:
    """A port number free on every one of ``addresses``."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind((addresses[0], 0))
            port = s.getsockname()[1]
        try:
            for address in addresses[1:]:
                with socket.socket() as s:
                    s.bind((address, port))
        except OSError:
            continue
        return port
    raise RuntimeError("no common free port")


def listening(address: str, port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex((address, port)) == 0


def wait_for(predicate, timeout: float) -> bool:
    """Poll for an outcome produced by other processes (not a sleep for time to pass)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return False


def message(i: int) -> bytes:
    lines = [
        f"From: <s{i}@sender.test>",
        "To: <u@example.com>",
        f"Subject: hand-back {i}",
        "Date: Fri, 04 Dec 2026 12:00:00 +0000",  # else the sender's Postfix appends one
        f"Message-Id: {make_msgid(f'e2e{i}')}",
        "",
        *(f"line {j} of message {i}: {'x' * (j % 70)}" for j in range(40 + i)),
        ".a line that starts with a dot",
    ]
    return ("\r\n".join(lines) + "\r\n").encode()


def body_of(raw: bytes) -> bytes:
    """The message as we sent it: what follows the headers the relays added on top (each
    adds only at the top), with CRLF line ends (a maildir file has LF)."""
    raw = raw.replace(b"\r\n", b"\n")
    start = raw.index(b"\nFrom: <s")
    return raw[start + 1 :].replace(b"\n", b"\r\n")


@pytest.fixture
def world(tmp_path: Path):
    port = free_port_on(PRIMARY_ADDRESS, BACKUP_ADDRESS, SENDER_ADDRESS)
    zones = {
        "example.com": {
            "example.com": [["MX", 10, "primary.test"], ["MX", 20, "mx2.test"]],
        },
        "test": {"primary.test": [["A", PRIMARY_ADDRESS]], "mx2.test": [["A", BACKUP_ADDRESS]]},
    }
    (tmp_path / "zones.json").write_text(json.dumps(zones))
    dns_server = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "dnsserver.py"), DNS_ADDRESS, "53", "zones.json"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        env={"PYTHONPATH": str(ROOT / "tests")},
    )
    stops = [dns_server.kill]
    try:
        assert dns_server.stdout is not None and dns_server.stdout.readline() == b"ready\n"
        resolv = tmp_path / "resolv.conf"
        resolv.write_text(f"nameserver {DNS_ADDRESS}\noptions timeout:1 attempts:2\n")
        # mxbackup: use_mx, and every delivery setting at its default (no delivery section
        # but the DNS server to ask: the test's, never the system's)
        config = {
            "server": {
                "hostname": "mx2.test",
                "listen": [f"tcp:{port}:interface={BACKUP_ADDRESS}"],
                "spool": str(tmp_path / "spool"),
                "min_free_space": 0,
            },
            "routes": [{"domain": "example.com", "use_mx": True, "port": port}],
            "delivery": {"dns_servers": [f"{DNS_ADDRESS}:53"]},
        }
        backup = Twistd(write_config(tmp_path, config), tmp_path / "twistd.log").start()
        stops.append(backup.stop)
        # Postfix's daemons (user postfix, the maildir's owner nobody) cannot pass through
        # pytest's private tmp_path: their directories go in one they can
        public = Path(tempfile.mkdtemp(prefix="mxbackup-e2e-"))
        stops.append(lambda: shutil.rmtree(public, ignore_errors=True))
        public.chmod(0o755)
        boxes = public / "boxes"
        boxes.mkdir()
        shutil.chown(boxes, user="nobody", group="nogroup")
        primary = Postfix(
            public,
            "primary",
            PRIMARY_ADDRESS,
            port,
            PRIMARY.format(domain="example.com", boxes=boxes, uid=65534, gid=65534),
        )
        sender = Postfix(
            public,
            "sender",
            SENDER_ADDRESS,
            port,
            SENDER.format(domain="example.com", mx_port=port),
        )
        sender.start(resolv_conf=resolv)
        stops.append(sender.stop)
        stops.append(primary.stop)
        yield {
            "port": port,
            "backup": backup,
            "primary": primary,
            "sender": sender,
            "maildir": boxes / "box" / "new",
            "spool": tmp_path / "spool",
        }
    finally:
        for stop in reversed(stops):
            stop()


def test_postfix_falls_back_to_us_by_mx_and_the_primary_gets_everything_once(world):
    sender, primary, backup = world["sender"], world["primary"], world["backup"]
    sent = [message(i) for i in range(COUNT)]
    with smtplib.SMTP(SENDER_ADDRESS, world["port"], timeout=10) as c:
        for raw in sent:
            c.sendmail("s@sender.test", ["u@example.com"], raw)
    # the sender finds the primary down (MX 10) and hands everything to us (MX 20)
    assert wait_for(lambda: len(spool_files(world["spool"], "env")) == COUNT, 30), sender.log()[
        -3000:
    ]
    assert wait_for(lambda: sender.queued() == 0, 10), sender.log()[-3000:]
    assert "status=sent" in sender.log() and f"[{BACKUP_ADDRESS}]" in sender.log()

    primary.start()
    assert wait_for(lambda: listening(PRIMARY_ADDRESS, world["port"]), 20)
    up_at = time.monotonic()
    maildir: Path = world["maildir"]

    def arrived() -> int:
        return len(list(maildir.iterdir())) if maildir.is_dir() else 0

    assert wait_for(lambda: arrived() >= 1, 15), backup.logtext()[-3000:]
    first = time.monotonic() - up_at
    assert wait_for(lambda: arrived() >= COUNT, 15), backup.logtext()[-3000:]
    everything = time.monotonic() - up_at
    print(f"primary up -> first delivery {first:.2f}s, all {COUNT} {everything:.2f}s")
    assert first < 5, f"first delivery {first:.1f}s after the primary came up"
    assert everything < 5, f"all delivered {everything:.1f}s after the primary came up"
    assert wait_for(lambda: spool_files(world["spool"], "env") == [], 10)
    # once each, intact
    received = {body_of(p.read_bytes()) for p in maildir.iterdir()}
    missing = [raw for raw in sent if raw not in received]
    assert not missing, (missing[0][:300], sorted(received)[0][:300])
    got = sorted(hashlib.sha256(raw).hexdigest() for raw in received)
    assert got == sorted(hashlib.sha256(raw).hexdigest() for raw in sent)
    assert arrived() == COUNT
    # our Received line is in each (it came through us)
    assert all(b"by mx2.test (mxbackup)" in p.read_bytes() for p in maildir.iterdir())
