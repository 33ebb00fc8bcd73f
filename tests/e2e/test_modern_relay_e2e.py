"""Issue 13 end to end: client -> the real twistd -> recording primaries, and the DSNs that
reach the sender's domain.

The primaries (``tests/primaryproc.py``, one process, ``fakeprimary.FakePrimary`` each) differ
only in their EHLO extensions:

- ``modern``  PIPELINING 8BITMIME DSN SMTPUTF8 CHUNKING
- ``dsnonly`` PIPELINING 8BITMIME DSN
- ``old``     PIPELINING 8BITMIME        (no DSN, no SMTPUTF8)
- ``seven``   PIPELINING                 (no 8BITMIME either)
- ``senders`` PIPELINING 8BITMIME SMTPUTF8: the senders' domains (``sender.test``,
  ``bücher.example``) are routed here, so every DSN we send is recorded here.

Senders: smtplib, raw sockets (pipelined BDAT) and swaks.  The Postfix tests (a private
instance as a real sender into mxbackup and as a primary) are in ``test_modern_postfix_e2e``.
"""

from __future__ import annotations

import email
import email.policy
import json
import os
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from helpers import ROOT, Twistd, base_config, spool_files, write_config

CLIENT = ("127.0.0.9", 0)
PRIMARIES = [
    {
        "name": "modern",
        "extensions": ["PIPELINING", "8BITMIME", "DSN", "SMTPUTF8", "CHUNKING"],
        "rcpt_replies": {"refused@modern.example": [550, "5.1.1 no such user"]},
    },
    {"name": "dsnonly", "extensions": ["PIPELINING", "8BITMIME", "DSN"]},
    {
        "name": "old",
        "extensions": ["PIPELINING", "8BITMIME"],
        "rcpt_replies": {
            "never@old.example": [550, "5.1.1 no such user"],
            "hdrs@old.example": [550, "5.1.1 no such user"],
        },
    },
    {"name": "seven", "extensions": ["PIPELINING"]},
    {"name": "senders", "extensions": ["PIPELINING", "8BITMIME", "SMTPUTF8"]},
]
ROUTES = [  # domain, primary, extra route keys
    ("modern.example", "modern", {}),
    ("müller.example", "modern", {}),
    ("dsn.example", "dsnonly", {}),
    ("old.example", "old", {}),
    ("grün.example", "old", {}),
    ("seven.example", "seven", {}),
    ("strict.example", "seven", {"allow_8bit_conversion": False}),
    ("sender.test", "senders", {}),
    ("bücher.example", "senders", {}),
]


def wait_for(predicate: Any, timeout: float = 15.0) -> Any:
    """Poll for what other processes produce (not a sleep for time to pass)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    return None


class Primaries:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        spec = directory / "spec.json"
        spec.write_text(json.dumps(PRIMARIES))
        self.log = open(directory / "primaries.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "primaryproc.py"), str(spec), str(directory)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
        )
        ports = wait_for(lambda: (directory / "ports.json").exists(), 20)
        assert ports, (directory / "primaries.log").read_text()
        self.ports: dict[str, int] = json.loads((directory / "ports.json").read_text())

    def transactions(self, name: str) -> list[dict[str, Any]]:
        path = self.dir / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else []

    def sync(self) -> None:
        """Wait until everything the primaries completed so far is in their files."""
        self.syncs = getattr(self, "syncs", 0) + 1
        (self.dir / f"sync-{self.syncs}").touch()
        assert wait_for((self.dir / f"ack-{self.syncs}").exists, 10)

    def commands(self, name: str) -> list[str]:
        path = self.dir / f"{name}.commands.json"
        return json.loads(path.read_text()) if path.exists() else []

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        self.log.close()


class World:
    def __init__(self, tmp: Path) -> None:
        self.primaries = Primaries(tmp)
        data = base_config(tmp)
        data["routes"] = [
            {"domain": d, "target_host": "127.0.0.1", "port": self.primaries.ports[p], **extra}
            for d, p, extra in ROUTES
        ]
        # every target is an address: no DNS; should anything ask, only a closed local port
        data["delivery"] = {"tick": 0.05, "dns_servers": ["127.0.0.1:9"]}
        self.spool = tmp / "spool"
        self.twistd = Twistd(write_config(tmp, data), tmp / "twistd.log").start()

    def stop(self) -> None:
        self.twistd.stop()
        self.primaries.stop()

    # -- what arrived ----------------------------------------------------------------------
    def arrived(self, primary: str, marker: str) -> list[dict[str, Any]]:
        return [t for t in self.primaries.transactions(primary) if marker in t["message"]]

    def wait_arrived(self, primary: str, marker: str, count: int = 1) -> list[dict[str, Any]]:
        got = wait_for(lambda: len(self.arrived(primary, marker)) >= count and True)
        assert got, self.twistd.logtext()[-3000:]
        return self.arrived(primary, marker)

    def dsns(self, marker: str) -> list[dict[str, Any]]:
        """DSNs at the senders' primary about the message that has ``marker`` in its headers."""
        return [t for t in self.arrived("senders", marker) if t["mail"].startswith("MAIL FROM:<>")]

    def settled(self, qid: str) -> None:
        """Wait until the message ``qid`` is done with (every recipient delivered or failed,
        its DSN queued) and every DSN we queued has been delivered."""
        log = self.twistd.logtext
        assert wait_for(lambda: qid not in spool_files(self.spool, "env")), log()[-3000:]
        assert wait_for(lambda: spool_files(self.spool, "env") == []), log()[-3000:]
        self.primaries.sync()  # we logged each delivery after its 250: it is recorded

    def send(
        self,
        sender: str,
        rcpts: list[str],
        message: bytes,
        mail_options: tuple[str, ...] = (),
        rcpt_options: tuple[str, ...] = (),
    ) -> str:
        """smtplib from 127.0.0.9, as ``sendmail`` does it; the queue id."""
        with smtplib.SMTP("127.0.0.1", self.twistd.port, timeout=10, source_address=CLIENT) as c:
            c.ehlo("client.test")
            assert c.mail(sender, list(mail_options))[0] == 250
            for rcpt in rcpts:
                assert c.rcpt(rcpt, list(rcpt_options))[0] == 250
            code, text = c.data(message)
            assert code == 250, text
        return queue_id(text)


def queue_id(reply: bytes) -> str:
    return reply.split(b"queued as ")[1].split()[0].decode()


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    w = World(tmp_path_factory.mktemp("modern-relay"))
    yield w
    w.stop()


def after_received(message: str) -> str:
    """The message as the primary got it, without our Received header (the first field)."""
    lines = message.split("\r\n")
    assert lines[0].startswith("Received: from "), lines[0]
    i = 1
    while lines[i].startswith(("\t", " ")):
        i += 1
    return "\r\n".join(lines[i:])


def wire(message: bytes) -> str:
    """``message`` as a primary records it (latin-1 text of the octets)."""
    return message.decode("latin-1")


def utf8(text: str) -> str:
    """``text``'s UTF-8 octets as the primaries' records hold them."""
    return text.encode().decode("latin-1")


def parse(t: dict[str, Any]) -> email.message.EmailMessage:
    return email.message_from_bytes(t["message"].encode("latin-1"), policy=email.policy.default)


def report(dsn: dict[str, Any]) -> str:
    """The delivery-status part of a DSN (its body), as text."""
    raw = dsn["message"].encode("latin-1").decode("utf-8")
    at = raw.index("delivery-status\r\n")
    body = raw[raw.index("\r\n\r\n", at) + 4 :]
    return body[: body.index("\r\n--")]


# -- SMTPUTF8 ------------------------------------------------------------------------------
UTF8_MESSAGE = "Subject: grüße {m}\r\nFrom: Jürgen <jürgen@bücher.example>\r\n\r\nhallo ü\r\n"


def test_smtputf8_to_a_primary_that_offers_it_arrives_intact(world):
    message = UTF8_MESSAGE.format(m="utf8-modern").encode()
    qid = world.send(
        "jürgen@bücher.example", ["ü@müller.example"], message, mail_options=["SMTPUTF8"]
    )
    (t,) = world.wait_arrived("modern", "utf8-modern")
    assert t["mail"].startswith(utf8("MAIL FROM:<jürgen@bücher.example>"))
    assert " SMTPUTF8" in t["mail"]
    assert t["rcpts"] == [utf8("ü@müller.example")]
    assert after_received(t["message"]) == wire(message)
    world.settled(qid)
    assert world.dsns("utf8-modern") == []


def test_smtputf8_to_a_primary_without_it_returns_one_global_dsn(world):
    message = UTF8_MESSAGE.format(m="utf8-old").encode()
    qid = world.send(
        "jürgen@bücher.example", ["ü@grün.example"], message, mail_options=["SMTPUTF8"]
    )
    world.settled(qid)
    assert world.arrived("old", "utf8-old") == []
    (dsn,) = world.dsns("utf8-old")
    assert " SMTPUTF8" in dsn["mail"]
    assert dsn["rcpts"] == [utf8("jürgen@bücher.example")]
    msg = parse(dsn)
    assert msg.get_content_type() == "multipart/report"
    types = [p.get_content_type() for p in msg.walk()]
    assert "message/global-delivery-status" in types
    status = report(dsn)
    assert "Status: 5.6.7" in status
    assert "Final-Recipient: utf-8; ü@grün.example" in status
    assert "Action: failed" in status


def test_ascii_local_part_with_a_u_label_domain_goes_as_a_labels_to_a_primary_without_it(world):
    """Postfix converts the domain to its A-label form when the target lacks SMTPUTF8 and
    only the domain is non-ASCII (sender and recipient): no 5.6.7 for such mail."""
    message = b"Subject: alabel-old\r\n\r\nplain\r\n"
    qid = world.send(
        "info@bücher.example", ["info@grün.example"], message, mail_options=["SMTPUTF8"]
    )
    (t,) = world.wait_arrived("old", "alabel-old")
    assert t["mail"].startswith("MAIL FROM:<info@xn--bcher-kva.example>")
    assert "SMTPUTF8" not in t["mail"]
    assert t["rcpts"] == ["info@xn--grn-ioa.example"]
    assert after_received(t["message"]) == wire(message)
    world.settled(qid)
    assert world.dsns("alabel-old") == []


def test_u_label_and_a_label_spellings_of_one_mailbox_are_delivered_once(world):
    message = b"Subject: dedupe\r\n\r\nonce\r\n"
    qid = world.send(
        "s@sender.test",
        ["x@müller.example", "x@xn--mller-kva.example", "X@MODERN.example", "X@modern.example"],
        message,
        mail_options=["SMTPUTF8"],
    )
    world.settled(qid)
    got = sorted(r for t in world.arrived("modern", "dedupe") for r in t["rcpts"])
    # one per mailbox: the domain compared in its lookup form (A-labels, lower case)
    assert got == ["X@modern.example", utf8("x@müller.example")]


# -- DSN parameters --------------------------------------------------------------------------
def test_dsn_parameters_are_passed_on_exactly_to_a_primary_that_offers_dsn(world):
    message = b"Subject: dsn-modern\r\n\r\nbody\r\n"
    qid = world.send(
        "s@sender.test",
        ["a@modern.example", "b@modern.example"],
        message,
        mail_options=["RET=HDRS", "ENVID=QQ+2Bid+3D1"],
        rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;a+2Bb@modern.example"],
    )
    (t,) = world.wait_arrived("modern", "dsn-modern")
    assert t["mail"] == "MAIL FROM:<s@sender.test> RET=HDRS ENVID=QQ+2Bid+3D1"
    commands = rcpt_lines(world, "modern", "a@modern.example")
    assert commands == [
        "RCPT TO:<a@modern.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;a+2Bb@modern.example"
    ]
    world.settled(qid)
    assert world.dsns("dsn-modern") == []  # the primary has the duty to notify now


def rcpt_lines(world: World, primary: str, rcpt: str) -> list[str]:
    """The RCPT command lines for ``rcpt`` (as the primary recorded them) it got."""
    return [
        c for c in world.primaries.commands(primary) if c.startswith("RCPT") and f"<{rcpt}>" in c
    ]
