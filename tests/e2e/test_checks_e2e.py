"""Checks end to end: the real twistd with DNSBL, SPF, DKIM and ARC on, its DNS answered by a
tiny server of the test's own on 127.0.0.1 (``delivery.dns_servers``), relaying to Postfix's
smtp-sink as the primary.  What arrives there still carries a valid DKIM signature (the body
and the sender's header fields untouched) and our ARC seal verifies; a listed client is
refused at RCPT."""

from __future__ import annotations

import os
import socket
import threading
from pathlib import Path

import dkim
import dns.message
import dns.rcode
import dns.rrset
import pytest
from test_delivery_e2e import SINK, free_port, start_sink, wait_for

from dnsserver import rsa_key
from helpers import Twistd, base_config, write_config

pytestmark = pytest.mark.skipif(not os.path.exists(SINK), reason="smtp-sink is not installed")

SIGNER_KEY, SIGNER_TXT = rsa_key()
ARC_KEY, ARC_TXT = rsa_key()


def txt(*parts: bytes) -> str:
    return " ".join('"' + p.decode() + '"' for p in parts)


RECORDS = {
    ("pass.test", "TXT"): [txt(b"v=spf1 ip4:127.0.0.1 -all")],
    ("sel._domainkey.pass.test", "TXT"): [txt(*SIGNER_TXT)],
    ("arc._domainkey.mx2.example.net", "TXT"): [txt(*ARC_TXT)],
    ("2.0.0.127.bl.test", "A"): ["127.0.0.2"],
    ("2.0.0.127.bl.test", "TXT"): ['"listed for the test"'],
}


class TinyDNS:
    """UDP on 127.0.0.1, answers from RECORDS (NXDOMAIN otherwise), in a thread."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            query = dns.message.from_wire(data)
            response = dns.message.make_response(query)
            question = query.question[0]
            name = question.name.to_text(omit_final_dot=True).lower()
            qtype = dns.rdatatype.to_text(question.rdtype)
            values = RECORDS.get((name, qtype))
            if values:
                response.answer.append(dns.rrset.from_text(question.name, 60, "IN", qtype, *values))
            elif not any(n == name for n, _ in RECORDS):
                response.set_rcode(dns.rcode.NXDOMAIN)
            self.sock.sendto(response.to_wire(), peer)

    def close(self) -> None:
        self.sock.close()


def lookup(name: bytes | str, timeout: int = 5) -> bytes | None:
    key = (name.decode() if isinstance(name, bytes) else name).lower().rstrip(".")
    values = RECORDS.get((key, "TXT"))
    if not values:
        return None
    return b"".join(part.encode() for part in values[0][1:-1].split('" "'))


@pytest.fixture
def world(tmp_path: Path):
    server_dns = TinyDNS()
    port = free_port()
    sink = start_sink(tmp_path / "sink", port)
    key = tmp_path / "arc.key"
    key.write_bytes(ARC_KEY)
    data = base_config(tmp_path)
    data["routes"][0].update({"target_host": "127.0.0.1", "port": port})
    data["delivery"] = {"dns_servers": [f"127.0.0.1:{server_dns.port}"]}
    data["checks"] = {
        "dns_timeout": 2,
        "dnsbl": [{"zone": "bl.test"}],
        "spf": "reject",
        "dkim": "tag",
        "arc": {"domain": "mx2.example.net", "selector": "arc", "private_key": str(key)},
    }
    server = Twistd(write_config(tmp_path, data), tmp_path / "twistd.log").start()
    try:
        yield server, tmp_path / "sink"
    finally:
        server.stop()
        sink.kill()
        sink.wait()
        server_dns.close()


def test_signed_mail_relayed_to_the_primary_still_verifies_and_is_sealed(world) -> None:
    server, sink = world
    message = (
        b"From: a@pass.test\r\nTo: u@example.com\r\nSubject: e2e\r\n"
        b"Authentication-Results: mx2.example.net; spf=pass (forged)\r\n\r\n"
        b"Body line one.\r\n.dot line\r\n"
    )
    signed = dkim.sign(message, b"sel", b"pass.test", SIGNER_KEY) + message
    with server.smtp("127.0.0.1") as c:
        c.sendmail("a@pass.test", ["u@example.com"], signed)
    assert wait_for(lambda: "outcome=delivered" in server.logtext()), server.logtext()
    (dump,) = sink.iterdir()
    received = dump.read_bytes()
    ours = received[received.index(b"ARC-Seal:") :].replace(b"\n", b"\r\n")[:-2]
    assert b"spf=pass smtp.mailfrom=pass.test" in ours
    assert b"dkim=pass header.d=pass.test" in ours
    assert b"(forged)" not in ours
    assert dkim.verify(ours, dnsfunc=lookup)
    cv, _, reason = dkim.arc_verify(ours, dnsfunc=lookup)
    assert cv == dkim.CV_Pass, reason


def test_listed_client_and_spf_fail_are_refused(world) -> None:
    server, _ = world
    with server.smtp("127.0.0.2") as c:
        c.ehlo("c.test")
        assert c.mail("a@other.test")[0] == 250
        code, text = c.rcpt("u@example.com")
        assert code == 554 and b"bl.test" in text and b"listed for the test" in text
    with server.smtp("127.0.0.1") as c:
        c.ehlo("c.test")
        code, _ = c.mail("a@pass.test")
        assert code == 250
        c.rset()
    with server.smtp("127.0.0.3") as c:
        c.ehlo("c.test")
        code, text = c.mail("a@pass.test")
        assert code == 550 and b"5.7.23" in text
