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
import shutil
import smtplib
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest
from primaryproc import Primaries, wait_for

from helpers import Twistd, base_config, spool_files, write_config

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


class World:
    def __init__(self, tmp: Path) -> None:
        self.primaries = Primaries(tmp, PRIMARIES)
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


def parts(dsn: dict[str, Any]) -> list[str]:
    """The content types of a DSN's parts (it must be a multipart/report)."""
    msg = parse(dsn)
    assert msg.get_content_type() == "multipart/report"
    assert msg.get_param("report-type") == "delivery-status"
    return [p.get_content_type() for p in msg.get_payload()]


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
    assert parts(dsn) == ["text/plain", "message/global-delivery-status", "message/global-headers"]
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


def test_utf8_orcpt_goes_in_its_ascii_form_to_a_dsn_target_without_smtputf8(world):
    message = b"Subject: orcpt-dsnonly\r\n\r\nbody\r\n"
    qid = world.send(
        "s@sender.test",
        ["c@dsn.example"],
        message,
        mail_options=["SMTPUTF8", "ENVID=e1"],
        rcpt_options=["NOTIFY=FAILURE", "ORCPT=utf-8;ü@dsn.example"],
    )
    (t,) = world.wait_arrived("dsnonly", "orcpt-dsnonly")
    assert "SMTPUTF8" not in t["mail"]
    assert t["mail"].endswith(" ENVID=e1")
    assert rcpt_lines(world, "dsnonly", "c@dsn.example") == [
        "RCPT TO:<c@dsn.example> NOTIFY=FAILURE ORCPT=utf-8;\\x{FC}@dsn.example"
    ]
    world.settled(qid)


def test_no_dsn_parameters_to_a_primary_without_dsn_and_success_is_ours(world):
    message = b"Subject: dsn-old\r\nMessage-Id: <dsn-old@client.test>\r\n\r\nbody dsn-old\r\n"
    qid = world.send(
        "s@sender.test",
        ["a@old.example"],
        message,
        mail_options=["RET=HDRS", "ENVID=QQ+2Bid"],
        rcpt_options=["NOTIFY=SUCCESS,FAILURE", "ORCPT=rfc822;a+2Bb@old.example"],
    )
    (t,) = world.wait_arrived("old", "dsn-old")
    assert t["mail"] == "MAIL FROM:<s@sender.test>"
    assert rcpt_lines(world, "old", "a@old.example") == ["RCPT TO:<a@old.example>"]
    assert after_received(t["message"]) == wire(message)
    world.settled(qid)
    (dsn,) = world.dsns("dsn-old")
    assert dsn["rcpts"] == ["s@sender.test"]
    msg = parse(dsn)
    assert "Successful" in msg["Subject"]
    status = report(dsn)
    assert "Action: relayed" in status
    assert "Status: 2." in status
    assert "Original-Envelope-Id: QQ+id" in status
    assert "Original-Recipient: rfc822;a+b@old.example" in status
    assert "Final-Recipient: rfc822; a@old.example" in status


def test_notify_never_and_a_5xx_at_the_primary_earn_no_bounce(world):
    message = b"Subject: never-old\r\n\r\nbody\r\n"
    qid = world.send("s@sender.test", ["never@old.example"], message, rcpt_options=["NOTIFY=NEVER"])
    world.settled(qid)
    log = world.twistd.logtext()
    assert f"delivery id={qid} rcpt=<never@old.example>" in log
    assert "outcome=permfail reply=550 5.1.1" in log
    assert world.dsns("never-old") == []
    assert world.arrived("old", "never-old") == []


def test_ret_hdrs_bounce_has_the_headers_only_with_envid_and_orcpt(world):
    message = b"Subject: hdrs-old\r\nX-Marker: hdrs\r\n\r\nTHE BODY TEXT\r\n"
    qid = world.send(
        "s@sender.test",
        ["hdrs@old.example"],
        message,
        mail_options=["RET=HDRS", "ENVID=env-hdrs"],
        rcpt_options=["NOTIFY=FAILURE", "ORCPT=rfc822;orig@old.example"],
    )
    world.settled(qid)
    (dsn,) = world.dsns("hdrs-old")
    assert parts(dsn) == ["text/plain", "message/delivery-status", "text/rfc822-headers"]
    assert "THE BODY TEXT" not in dsn["message"]
    assert "X-Marker: hdrs" in dsn["message"]
    status = report(dsn)
    assert "Original-Envelope-Id: env-hdrs" in status
    assert "Original-Recipient: rfc822;orig@old.example" in status
    assert "Action: failed" in status
    assert "Status: 5.1.1" in status
    assert "Diagnostic-Code: smtp; 550 5.1.1 no such user" in status


def test_a_refusal_by_a_dsn_primary_is_still_ours_to_report(world):
    """The primary refused the recipient at RCPT: it never took the duty to notify."""
    message = b"Subject: refused-modern\r\n\r\nbody\r\n"
    qid = world.send(
        "s@sender.test", ["refused@modern.example"], message, rcpt_options=["NOTIFY=FAILURE"]
    )
    world.settled(qid)
    (dsn,) = world.dsns("refused-modern")
    assert "Status: 5.1.1" in report(dsn)


def test_ret_full_bounce_returns_the_whole_message(world):
    message = b"Subject: full-old\r\n\r\nTHE FULL BODY\r\n"
    qid = world.send("s@sender.test", ["hdrs@old.example"], message, mail_options=["RET=FULL"])
    world.settled(qid)
    (dsn,) = world.dsns("full-old")
    assert parts(dsn) == ["text/plain", "message/delivery-status", "message/rfc822"]
    assert "THE FULL BODY" in dsn["message"]


# -- CHUNKING ------------------------------------------------------------------------------
BDAT_MESSAGE = (
    "Subject: bdat-same\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    "Content-Transfer-Encoding: 8bit\r\n\r\n.leading dot\r\n.\r\n..two dots\r\ngrüße\r\n"
    + "x" * 998
    + "\r\n"
).encode()


def bdat_session(port: int, message: bytes, sizes: list[int]) -> list[bytes]:
    """One pipelined write, as a client that trusts PIPELINING and CHUNKING sends it: EHLO,
    MAIL, RCPT, the message in BDAT chunks of ``sizes`` (the last one LAST), QUIT.  The
    final reply lines."""
    out = b"EHLO client.test\r\nMAIL FROM:<s@sender.test> BODY=8BITMIME\r\n"
    out += b"RCPT TO:<bdat@modern.example>\r\n"
    at = 0
    for i, size in enumerate(sizes):
        last = b" LAST" if i == len(sizes) - 1 else b""
        out += b"BDAT %d%s\r\n" % (size, last) + message[at : at + size]
        at += size
    assert at == len(message)
    out += b"QUIT\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10, source_address=CLIENT) as s:
        s.sendall(out)
        buf = b""
        while chunk := s.recv(65536):
            buf += chunk
    return [line for line in buf.split(b"\r\n") if line[3:4] == b" "]


def test_bdat_pipelined_in_chunks_is_delivered_as_the_data_variant(world):
    qid_data = world.send(
        "s@sender.test", ["bdat@modern.example"], BDAT_MESSAGE, mail_options=["BODY=8BITMIME"]
    )
    world.wait_arrived("modern", "bdat-same")
    third = len(BDAT_MESSAGE) // 3
    replies = bdat_session(
        world.twistd.port, BDAT_MESSAGE, [third, third, len(BDAT_MESSAGE) - 2 * third]
    )
    assert [r[:3] for r in replies] == [
        b"220",
        b"250",
        b"250",
        b"250",
        b"250",
        b"250",
        b"250",
        b"221",
    ]
    qid_bdat = queue_id(replies[-2])
    via_data, via_bdat = world.wait_arrived("modern", "bdat-same", 2)
    assert after_received(via_bdat["message"]) == after_received(via_data["message"])
    assert after_received(via_bdat["message"]) == wire(BDAT_MESSAGE)
    assert " BODY=8BITMIME" in via_bdat["mail"]
    assert f"id {qid_bdat}" in via_bdat["message"] and f"id {qid_data}" in via_data["message"]
    world.settled(qid_bdat)


# -- 8BITMIME ------------------------------------------------------------------------------
EIGHT_BIT = (
    b"Subject: {m}\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
    b"Content-Transfer-Encoding: 8bit\r\n\r\ncaf\xc3\xa9 = cr\xc3\xa8me br\xc3\xbbl\xc3\xa9e\r\n"
    b"=?not an encoded word?=\r\n"
)


def test_8bit_to_a_primary_without_8bitmime_is_converted_to_7bit(world):
    message = EIGHT_BIT.replace(b"{m}", b"seven-conv")
    qid = world.send("s@sender.test", ["a@seven.example"], message, mail_options=["BODY=8BITMIME"])
    (t,) = world.wait_arrived("seven", "seven-conv")
    assert "BODY=" not in t["mail"]
    raw = t["message"].encode("latin-1")
    assert raw.isascii()
    assert all(len(line) <= 998 for line in raw.split(b"\r\n"))
    msg = parse(t)
    assert msg["Content-Transfer-Encoding"] == "quoted-printable"
    assert msg.get_payload(decode=True) == message.split(b"\r\n\r\n", 1)[1]
    world.settled(qid)
    assert world.dsns("seven-conv") == []


def test_8bit_with_conversion_refused_by_the_route_returns_563(world):
    message = EIGHT_BIT.replace(b"{m}", b"strict-563")
    qid = world.send("s@sender.test", ["a@strict.example"], message, mail_options=["BODY=8BITMIME"])
    world.settled(qid)
    assert world.arrived("seven", "strict-563") == []
    (dsn,) = world.dsns("strict-563")
    status = report(dsn)
    assert "Status: 5.6.3" in status
    assert "Action: failed" in status


def test_7bit_mail_to_the_strict_route_goes_as_it_is(world):
    message = b"Subject: strict-ascii\r\n\r\nplain\r\n"
    qid = world.send("s@sender.test", ["a@strict.example"], message, mail_options=["BODY=8BITMIME"])
    (t,) = world.wait_arrived("seven", "strict-ascii")
    assert after_received(t["message"]) == wire(message)
    world.settled(qid)


# -- swaks as the sender ---------------------------------------------------------------------
SWAKS = shutil.which("swaks")


@pytest.mark.skipif(SWAKS is None, reason="swaks is not installed (apt install swaks)")
def test_swaks_smtputf8_and_dsn_through_to_the_primary(world, tmp_path):
    """swaks has no options for MAIL/RCPT parameters: they ride in the address argument
    (``a> SMTPUTF8 ENVID=x<`` is ``<a> SMTPUTF8 ENVID=x<>`` on the wire; see
    test_modern_wire)."""
    body = tmp_path / "body"
    body.write_bytes("Subject: swaks-modern\r\n\r\nBody über alles\r\n".encode())
    result = subprocess.run(
        [
            SWAKS, "--server", f"127.0.0.1:{world.twistd.port}", "--helo", "client.test",
            "--local-interface", "127.0.0.9", "--timeout", "10", "--pipeline",
            "--from", "jürgen@bücher.example> SMTPUTF8 RET=HDRS ENVID=sw+2B1<",
            "--to", "ü.swaks@müller.example> NOTIFY=SUCCESS ORCPT=utf-8;ü@müller.example<",
            "--body", f"@{body}",
        ],
        capture_output=True,
        timeout=30,
    )  # fmt: skip
    assert result.returncode == 0, (result.stdout + result.stderr).decode("utf-8", "replace")
    (t,) = world.wait_arrived("modern", "swaks-modern")
    assert t["mail"] == utf8(
        "MAIL FROM:<jürgen@bücher.example> BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=sw+2B1<>"
    )
    assert rcpt_lines(world, "modern", utf8("ü.swaks@müller.example")) == [
        utf8("RCPT TO:<ü.swaks@müller.example> NOTIFY=SUCCESS ORCPT=utf-8;ü@müller.example<>")
    ]
    # swaks writes its own header section (Date, To, From, Subject...) before --body
    assert "\r\n\r\n" + wire(body.read_bytes()) in after_received(t["message"])
    assert after_received(t["message"]).startswith("Date: ")


def test_ascii_sender_utf8_recipient_refused_gets_a_global_dsn(world):
    """The sender's address is ASCII, the failed recipient's is not: the DSN names it in
    UTF-8 (``Final-Recipient: utf-8``), so it is itself SMTPUTF8 mail (RFC 6533)."""
    message = b"Subject: utf8-rcpt-old\r\n\r\nplain\r\n"
    qid = world.send("s@sender.test", ["ü@old.example"], message, mail_options=["SMTPUTF8"])
    world.settled(qid)
    (dsn,) = world.dsns("utf8-rcpt-old")
    assert " SMTPUTF8" in dsn["mail"] and dsn["rcpts"] == ["s@sender.test"]
    assert parts(dsn)[1] == "message/global-delivery-status"
    status = report(dsn)
    assert "Final-Recipient: utf-8; ü@old.example" in status
    assert "Status: 5.6.7" in status


def test_8bit_multipart_and_non_mime_mail_converted_for_a_primary_without_8bitmime(world):
    multipart = (
        b"Subject: seven-multi\r\nMIME-Version: 1.0\r\n"
        b'Content-Type: multipart/mixed; boundary="b1"\r\n\r\npreamble\r\n--b1\r\n'
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: 8bit\r\n\r\n"
        b"eins \xc3\xbc\r\n--b1\r\nContent-Type: text/plain; charset=latin-1\r\n"
        b"Content-Transfer-Encoding: 8bit\r\n\r\nzwei \xfc\r\n--b1--\r\n"
    )
    plain = b"Subject: seven-plain\r\n\r\nno MIME at all \xc3\xa9\r\n"
    qids = [
        world.send("s@sender.test", ["a@seven.example"], m, mail_options=["BODY=8BITMIME"])
        for m in (multipart, plain)
    ]
    (multi,) = world.wait_arrived("seven", "seven-multi")
    (non_mime,) = world.wait_arrived("seven", "seven-plain")
    for t in (multi, non_mime):
        assert t["message"].encode("latin-1").isascii()
    leaves = [p for p in parse(multi).walk() if not p.is_multipart()]
    assert [p.get_payload(decode=True) for p in leaves] == [
        b"eins \xc3\xbc",
        b"zwei \xfc",
    ]  # the CRLF before a boundary is the boundary's
    converted = parse(non_mime)
    assert converted["Content-Transfer-Encoding"] == "quoted-printable"
    assert converted.get_payload(decode=True) == b"no MIME at all \xc3\xa9\r\n"
    for qid in qids:
        world.settled(qid)
