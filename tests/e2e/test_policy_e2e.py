"""End-to-end policy tests: the real ``twistd mxbackup`` on loopback sockets.

Who may hand us mail for which address (routes, address lists, the IP-range matrix), the
addresses that carry their own routing, the limits, the reply codes, swaks as a real client,
and the log lines an operator relies on.

Clients bind to 127.0.0.9 (and other 127/8 addresses) to act as "the Internet"; 127.0.0.1 is
the trusted "My computer" range of the default ip_ranges.  One twistd per distinct config,
module scope.
"""

from __future__ import annotations

import re
import shutil
import smtplib
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import SpoolServer, base_config, serve, spool_files

INTERNET = "127.0.0.9"
TRUSTED = "127.0.0.1"
ENHANCED = re.compile(r"(\d)\.\d{1,3}\.\d{1,3}(?: |$)")
QUEUED = re.compile(r"2\.0\.0 Ok: queued as ([0-9A-Za-z]+)$")


# -- servers ------------------------------------------------------------------------------------
class Server(SpoolServer):
    def smtp(self, ip: str = INTERNET) -> smtplib.SMTP:
        s = self.twistd.smtp(ip, local_hostname="client.test")
        code, _ = s.ehlo()
        assert code == 250
        return s

    def raw(self, ip: str = INTERNET) -> socket.socket:
        return socket.create_connection(
            ("127.0.0.1", self.port), timeout=10, source_address=(ip, 0)
        )


def _start(tmp: Path, data: dict[str, Any]) -> Iterator[Server]:
    yield from serve(tmp, data, Server)


@pytest.fixture(scope="module")
def mx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """base_config, default ip_ranges."""
    tmp = tmp_path_factory.mktemp("mx-base")
    yield from _start(tmp, base_config(tmp))


@pytest.fixture(scope="module")
def matrix_mx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("mx-matrix")
    data = base_config(tmp)
    no_auth = dict.fromkeys(
        ("local_to_local", "local_to_external", "external_to_local", "external_to_external"), False
    )
    data["ip_ranges"] = [
        {"name": "trusted", "addresses": ["127.0.0.8/29"], "require_auth": no_auth},
        {
            "name": "Internet",
            "addresses": ["0.0.0.0/0", "::/0"],
            "require_auth": {
                "local_to_local": True,
                "local_to_external": True,
                "external_to_local": False,
                "external_to_external": True,
            },
        },
        {"name": "My computer", "addresses": ["127.0.0.1/32"], "require_auth": no_auth},
        {"name": "closed", "addresses": ["127.0.0.32/27"], "allow": {"external_to_local": False}},
    ]
    data["routes"] += [
        {
            "domain": "ext.test",
            "target_host": "127.0.0.1",
            "port": 9,
            "treat_recipient_as": "external",
        },
        {"domain": "spoof.test", "target_host": "127.0.0.1", "port": 9, "treat_sender_as": "local"},
    ]
    yield from _start(tmp, data)


@pytest.fixture(scope="module")
def limits_mx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("mx-limits")
    data = base_config(tmp, max_recipients=3, max_message_size=10000, max_received_headers=3)
    yield from _start(tmp, data)


@pytest.fixture(scope="module")
def full_mx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("mx-full")
    yield from _start(tmp, base_config(tmp, min_free_space=10**18))


@pytest.fixture(scope="module")
def conn_mx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("mx-conn")
    data = base_config(tmp, max_connections=3, max_connections_per_ip=2)
    yield from _start(tmp, data)


# -- small helpers ------------------------------------------------------------------------------
def rcpt(s: smtplib.SMTP, address: str) -> tuple[int, str]:
    """RCPT TO:<address> sent verbatim (smtplib would re-quote it)."""
    code, msg = s.docmd(f"RCPT TO:<{address}>")
    return code, msg.decode()


def mail(s: smtplib.SMTP, sender: str = "sender@elsewhere.test") -> None:
    code, msg = s.docmd(f"MAIL FROM:<{sender}>")
    assert (code, msg[:5]) == (250, b"2.1.0"), (code, msg)


def send_data(s: smtplib.SMTP, wire: bytes) -> tuple[int, str]:
    """DATA, then ``wire`` exactly as given (already dot-stuffed, ending in CRLF.CRLF)."""
    code, msg = s.docmd("DATA")
    assert code == 354, (code, msg)
    s.sock.sendall(wire)
    code, msg = s.getreply()
    return code, msg.decode()


def queued_id(code: int, msg: str) -> str:
    assert code == 250, (code, msg)
    m = QUEUED.match(msg)
    assert m, msg
    return m.group(1)


def quit_(s: smtplib.SMTP) -> None:
    try:
        s.quit()
    except smtplib.SMTPServerDisconnected:
        pass


def assert_status(code: int, msg: str, expected: str) -> None:
    """``expected`` is "550 5.7.1": the basic and the enhanced code."""
    basic, enhanced = expected.split()
    assert (code, msg.split(" ", 1)[0]) == (int(basic), enhanced), (code, msg)


SIMPLE = b"From: a@elsewhere.test\r\nSubject: test\r\n\r\nhello\r\n.\r\n"


def deliver(server: Server, recipients: list[str], ip: str = INTERNET) -> str:
    s = server.smtp(ip)
    try:
        mail(s)
        for r in recipients:
            code, msg = rcpt(s, r)
            assert code == 250, (r, code, msg)
        return queued_id(*send_data(s, SIMPLE))
    finally:
        quit_(s)


# == 1. a routed domain ===========================================================================
@pytest.mark.parametrize("address", ["user@example.com", "USER@EXAMPLE.COM", "User@Example.Com"])
def test_rcpt_to_routed_domain_is_accepted_case_insensitively(mx: Server, address: str) -> None:
    s = mx.smtp()
    try:
        mail(s)
        code, msg = rcpt(s, address)
        assert_status(code, msg, "250 2.1.5")
    finally:
        quit_(s)


def test_whole_message_is_queued_byte_exact_below_our_received_header(mx: Server) -> None:
    # The message as the client means it, then as it travels (dot-stuffed).
    body = (
        b"From: Sender <sender@elsewhere.test>\r\n"
        b"To: user@example.com\r\n"
        b"Subject: byte exact\r\n"
        b"\r\n"
        b"first line\r\n"
        b".leading dot\r\n"
        b"..two dots\r\n"
        b".\r\n"  # a line of one dot: ".." on the wire
        b"tab\there and trailing space \r\n"
        b"\r\n"
        b"last line\r\n"
    )
    wire = (
        b"".join(
            (b"." + line if line.startswith(b".") else line) + b"\r\n"
            for line in body[:-2].split(b"\r\n")
        )
        + b".\r\n"
    )
    before = set(mx.new())
    s = mx.smtp()
    try:
        mail(s)
        assert rcpt(s, "user@example.com")[0] == 250
        queue_id = queued_id(*send_data(s, wire))
    finally:
        quit_(s)
    assert set(mx.new()) - before == {queue_id}
    assert (mx.spool / "env" / queue_id).is_file()
    stored = (mx.spool / "new" / queue_id).read_bytes()
    # Our Received header comes first (folded lines start with white space), then the
    # client's bytes, exactly.
    lines = stored.split(b"\r\n")
    n = 1
    while lines[n][:1] in (b" ", b"\t"):
        n += 1
    received = b"\r\n".join(lines[:n]).decode()
    rest = b"\r\n".join(lines[n:])
    assert received.startswith("Received: from "), received
    assert "[127.0.0.9]" in received
    assert "by mx2.example.net" in received
    assert f"id {queue_id}" in received
    assert rest == body
    env = mx.envelope(queue_id)
    assert [r["address"] for r in env["recipients"]] == ["user@example.com"]
    assert env["sender"] == "sender@elsewhere.test"
    assert env["client_ip"] == INTERNET


# == 2. label-aware matching =====================================================================
@pytest.mark.parametrize(
    "address",
    [
        "user@evilexample.com",
        "user@example.com.evil.test",
        "user@sub.example.com",  # no wildcard route for example.com
        "user@example.org",  # *.example.org does not match the apex
        "alice@example.org",
        "user@xexample.org",
        "user@example.net",
        "user@elsewhere.test",
    ],
)
def test_unrouted_domains_are_relay_denied(mx: Server, address: str) -> None:
    s = mx.smtp()
    try:
        mail(s)
        assert_status(*rcpt(s, address), "550 5.7.1")
    finally:
        quit_(s)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("alice@sub.example.org", "250 2.1.5"),
        ("ALICE@SUB.EXAMPLE.ORG", "250 2.1.5"),
        ("bob@sub.example.org", "250 2.1.5"),  # listed as Bob@Sub.Example.org
        ("carol@sub.example.org", "550 5.1.1"),
        ("user@a.sub.example.org", "550 5.1.1"),  # wildcard matches, but not on the list
        ("alice@a.sub.example.org", "550 5.1.1"),  # the list is whole addresses
        ("alice@other.example.org", "550 5.1.1"),
    ],
)
def test_wildcard_route_with_address_list(mx: Server, address: str, expected: str) -> None:
    s = mx.smtp()
    try:
        mail(s)
        assert_status(*rcpt(s, address), expected)
    finally:
        quit_(s)


def test_my_computer_may_relay_but_internet_may_not(mx: Server) -> None:
    s = mx.smtp(TRUSTED)
    try:
        mail(s)
        assert_status(*rcpt(s, "user@elsewhere.test"), "250 2.1.5")
    finally:
        quit_(s)
    s = mx.smtp(INTERNET)
    try:
        mail(s)
        assert_status(*rcpt(s, "user@elsewhere.test"), "550 5.7.1")
    finally:
        quit_(s)


# == 3. addresses carrying their own routing, and malformed ones =================================
ROUTING = {"550 5.7.1"}
SYNTAX = {"553 5.1.3", "501 5.5.4"}
TRICKS = [
    ("percent", "user%evil.test@example.com", ROUTING),
    ("bang", "evil.test!user@example.com", ROUTING),
    ("quoted-at", '"user@evil.test"@example.com', ROUTING),
    ("quoted-percent", '"user%evil.test"@example.com', ROUTING),
    ("quoted-bang", '"evil.test!user"@example.com', ROUTING),
    ("quoted-backslash", '"user\\@evil.test"@example.com', ROUTING),
    ("source-route", "@example.com:user@evil.test", ROUTING),
    ("source-route-2", "@a.example.com,@b.example.com:user@example.com", ROUTING),
    ("extra-at", "user@evil.test@example.com", ROUTING | SYNTAX),
    ("literal-v4", "user@[127.0.0.1]", ROUTING),
    ("literal-v6", "user@[IPv6:::1]", ROUTING),
    ("trailing-dot", "user@example.com.", SYNTAX),
    ("empty", "", SYNTAX),
    ("bare-postmaster", "postmaster", SYNTAX),
    ("no-local-part", "@example.com", SYNTAX),
]


@pytest.mark.parametrize("ip", [INTERNET, TRUSTED], ids=["internet", "trusted"])
@pytest.mark.parametrize(
    ("address", "expected"), [t[1:] for t in TRICKS], ids=[t[0] for t in TRICKS]
)
def test_routing_tricks_are_refused_even_from_trusted_range(
    mx: Server, ip: str, address: str, expected: set[str]
) -> None:
    before = (mx.new(), spool_files(mx.spool, "env"))
    s = mx.smtp(ip)
    try:
        mail(s)
        code, msg = rcpt(s, address)
        assert code // 100 == 5, (code, msg)
        assert f"{code} {msg.split(' ', 1)[0]}" in expected, (code, msg)
        code, msg = s.docmd("DATA")
        assert (code, msg.decode()) == (554, "5.5.1 No valid recipients")
    finally:
        quit_(s)
    assert (mx.new(), spool_files(mx.spool, "env")) == before


@pytest.mark.parametrize("ip", [INTERNET, TRUSTED], ids=["internet", "trusted"])
def test_utf8_local_part_without_smtputf8_is_refused(mx: Server, ip: str) -> None:
    before = mx.new()
    s = mx.smtp(ip)
    try:
        mail(s)
        s.sock.sendall("RCPT TO:<jürgen@example.com>\r\n".encode())
        code, msg = s.getreply()
        assert code // 100 == 5, (code, msg)
        assert ENHANCED.match(msg.decode()), msg
        code, msg = s.docmd("DATA")
        assert (code, msg.decode()) == (554, "5.5.1 No valid recipients")
    finally:
        quit_(s)
    assert mx.new() == before


# == 4. one good recipient, one refused ===========================================================
def test_valid_then_external_recipient_queues_only_the_valid_one(mx: Server) -> None:
    s = mx.smtp()
    try:
        mail(s)
        assert_status(*rcpt(s, "user@example.com"), "250 2.1.5")
        assert_status(*rcpt(s, "victim@elsewhere.test"), "550 5.7.1")
        queue_id = queued_id(*send_data(s, SIMPLE))
    finally:
        quit_(s)
    assert mx.recipients(queue_id) == ["user@example.com"]


def test_a_recipient_given_twice_is_queued_once(mx: Server) -> None:
    """Listing the same address twice must not make the primary receive the message twice."""
    s = mx.smtp()
    try:
        mail(s)
        assert_status(*rcpt(s, "twice@example.com"), "250 2.1.5")
        assert_status(*rcpt(s, "twice@example.com"), "250 2.1.5")
        assert_status(*rcpt(s, "twice@EXAMPLE.COM"), "250 2.1.5")
        queue_id = queued_id(*send_data(s, SIMPLE))
    finally:
        quit_(s)
    assert mx.recipients(queue_id) == ["twice@example.com"]


# == 5. the IP-range matrix ======================================================================
@pytest.mark.parametrize(
    ("ip", "sender", "recipient", "expected"),
    [
        # 127.0.0.9 is in "trusted" 127.0.0.8/29, which beats 0.0.0.0/0.
        ("127.0.0.9", "someone@other.test", "user@elsewhere.test", "250 2.1.5"),
        ("127.0.0.15", "someone@other.test", "user@elsewhere.test", "250 2.1.5"),
        ("127.0.0.9", "someone@other.test", "user@ext.test", "250 2.1.5"),
        ("127.0.0.9", "someone@spoof.test", "user@spoof.test", "250 2.1.5"),
        # 127.0.0.20 is only in "Internet".
        ("127.0.0.20", "someone@other.test", "user@elsewhere.test", "550 5.7.1"),
        ("127.0.0.16", "someone@other.test", "user@elsewhere.test", "550 5.7.1"),
        ("127.0.0.20", "someone@other.test", "user@example.com", "250 2.1.5"),
        ("127.0.0.20", "someone@other.test", "user@ext.test", "530 5.7.0"),
        ("127.0.0.20", "someone@spoof.test", "user@spoof.test", "530 5.7.0"),
        ("127.0.0.20", "SomeOne@SPOOF.test", "user@spoof.test", "530 5.7.0"),
        # A sender in spoof.test is local whatever the recipient: local -> local needs AUTH.
        ("127.0.0.20", "someone@spoof.test", "user@example.com", "530 5.7.0"),
        ("127.0.0.20", "someone@other.test", "user@spoof.test", "250 2.1.5"),
        ("127.0.0.20", "", "user@spoof.test", "250 2.1.5"),  # the null sender is external
        # 127.0.0.32/27 does not allow external -> local.
        ("127.0.0.33", "someone@other.test", "user@example.com", "550 5.7.1"),
        ("127.0.0.63", "someone@other.test", "alice@sub.example.org", "550 5.7.1"),
        ("127.0.0.64", "someone@other.test", "user@example.com", "250 2.1.5"),
        # "My computer" /32.
        ("127.0.0.1", "someone@other.test", "user@elsewhere.test", "250 2.1.5"),
        ("127.0.0.1", "someone@spoof.test", "user@spoof.test", "250 2.1.5"),
    ],
)
def test_ip_range_matrix(
    matrix_mx: Server, ip: str, sender: str, recipient: str, expected: str
) -> None:
    s = matrix_mx.smtp(ip)
    try:
        mail(s, sender)
        assert_status(*rcpt(s, recipient), expected)
    finally:
        quit_(s)


def test_relayed_message_from_trusted_range_is_queued_for_mx_lookup(matrix_mx: Server) -> None:
    queue_id = deliver(matrix_mx, ["user@elsewhere.test"], ip="127.0.0.10")
    env = matrix_mx.envelope(queue_id)
    assert [(r["address"], r["route"]) for r in env["recipients"]] == [
        ("user@elsewhere.test", None)
    ]


# == 6. limits ===================================================================================
def test_recipient_limit_and_the_first_three_are_queued(limits_mx: Server) -> None:
    s = limits_mx.smtp()
    try:
        mail(s)
        for i in range(3):
            assert_status(*rcpt(s, f"user{i}@example.com"), "250 2.1.5")
        assert_status(*rcpt(s, "user3@example.com"), "452 4.5.3")
        queue_id = queued_id(*send_data(s, SIMPLE))
    finally:
        quit_(s)
    assert limits_mx.recipients(queue_id) == [f"user{i}@example.com" for i in range(3)]


def test_ehlo_advertises_configured_size(limits_mx: Server) -> None:
    s = limits_mx.smtp()
    try:
        assert s.esmtp_features.get("size") == "10000"
    finally:
        quit_(s)


def test_declared_size_above_limit_is_refused_at_mail(limits_mx: Server) -> None:
    s = limits_mx.smtp()
    try:
        code, msg = s.docmd("MAIL FROM:<a@b.test> SIZE=20000")
        assert_status(code, msg.decode(), "552 5.3.4")
        code, msg = s.docmd("MAIL FROM:<a@b.test> SIZE=10000")
        assert_status(code, msg.decode(), "250 2.1.0")
    finally:
        quit_(s)


def test_oversized_body_without_size_is_refused_at_end_of_data(limits_mx: Server) -> None:
    before = limits_mx.new()
    line = b"x" * 98 + b"\r\n"
    wire = b"Subject: big\r\n\r\n" + line * 200 + b".\r\n"  # about 20 KB
    s = limits_mx.smtp()
    try:
        mail(s)
        assert rcpt(s, "user@example.com")[0] == 250
        assert_status(*send_data(s, wire), "552 5.3.4")
        # The session is still usable.
        assert s.docmd("NOOP")[0] == 250
    finally:
        quit_(s)
    assert limits_mx.new() == before
    assert spool_files(limits_mx.spool, "tmp") == []


@pytest.mark.parametrize(("size", "expected"), [(10000, 250), (10001, 552)])
def test_message_size_limit_is_exact(limits_mx: Server, size: int, expected: int) -> None:
    head = b"Subject: exact size\r\n\r\n"
    filler = size - len(head)
    lines, last = divmod(filler, 100)
    body = b"y" * 98 + b"\r\n"
    message = head + body * lines + (b"z" * (last - 2) + b"\r\n" if last else b"")
    assert len(message) == size
    s = limits_mx.smtp()
    try:
        mail(s)
        assert rcpt(s, "user@example.com")[0] == 250
        code, msg = send_data(s, message + b".\r\n")
        assert code == expected, (code, msg)
    finally:
        quit_(s)


def _with_received(n: int) -> bytes:
    hops = b"".join(
        b"Received: from hop%d.test by hop%d.test; Mon, 1 Jan 2024 00:00:00 +0000\r\n" % (i, i + 1)
        for i in range(n)
    )
    return hops + b"Subject: loop\r\n\r\nbody\r\n.\r\n"


def test_too_many_received_headers_is_a_loop(limits_mx: Server) -> None:
    before = limits_mx.new()
    s = limits_mx.smtp()
    try:
        mail(s)
        assert rcpt(s, "user@example.com")[0] == 250
        assert_status(*send_data(s, _with_received(4)), "554 5.4.0")
    finally:
        quit_(s)
    assert limits_mx.new() == before


def test_received_headers_at_the_limit_are_accepted(limits_mx: Server) -> None:
    s = limits_mx.smtp()
    try:
        mail(s)
        assert rcpt(s, "user@example.com")[0] == 250
        queued_id(*send_data(s, _with_received(3)))
    finally:
        quit_(s)


def test_received_lines_in_the_body_are_not_hops(limits_mx: Server) -> None:
    hops = b"Received: from a by b; Mon, 1 Jan 2024 00:00:00 +0000\r\n" * 10
    s = limits_mx.smtp()
    try:
        mail(s)
        assert rcpt(s, "user@example.com")[0] == 250
        queued_id(*send_data(s, b"Subject: quoted bounce\r\n\r\n" + hops + b".\r\n"))
    finally:
        quit_(s)


def test_low_free_space_refuses_mail_with_452(full_mx: Server) -> None:
    s = full_mx.smtp()
    try:
        code, msg = s.docmd("MAIL FROM:<a@b.test>")
        assert_status(code, msg.decode(), "452 4.3.1")
    finally:
        quit_(s)


def _greeting(sock: socket.socket) -> str:
    data = b""
    while not data.endswith(b"\r\n"):
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data.decode()


def _close(sock: socket.socket) -> None:
    """QUIT and read to EOF: once the server has closed, it has forgotten the connection."""
    try:
        sock.sendall(b"QUIT\r\n")
        while sock.recv(4096):
            pass
    except OSError:
        pass
    sock.close()


def test_connection_limit_per_ip(conn_mx: Server) -> None:
    a, b = conn_mx.raw("127.0.0.9"), conn_mx.raw("127.0.0.9")
    others: list[socket.socket] = []
    try:
        assert _greeting(a).startswith("220 ")
        assert _greeting(b).startswith("220 ")
        c = conn_mx.raw("127.0.0.9")
        others.append(c)
        assert _greeting(c).startswith("421 4.7.0 ")
        assert c.recv(4096) == b""  # and closed
        d = conn_mx.raw("127.0.0.10")
        others.append(d)
        assert _greeting(d).startswith("220 ")
    finally:
        for sock in (a, b, *others):
            _close(sock)


def test_connection_limit_total(conn_mx: Server) -> None:
    socks = [conn_mx.raw(ip) for ip in ("127.0.0.11", "127.0.0.12", "127.0.0.13")]
    try:
        for sock in socks:
            assert _greeting(sock).startswith("220 ")
        extra = conn_mx.raw("127.0.0.14")
        socks.append(extra)
        assert _greeting(extra).startswith("421 4.7.0 ")
    finally:
        for sock in socks:
            _close(sock)
    # Once they are gone, there is room again.
    sock = conn_mx.raw("127.0.0.14")
    try:
        assert _greeting(sock).startswith("220 ")
    finally:
        _close(sock)


# == 7. the session's replies ====================================================================
def _read_reply(f: Any) -> list[str]:
    lines = []
    while True:
        line = f.readline().decode()
        assert line.endswith("\r\n"), line
        lines.append(line[:-2])
        if line[3:4] != "-":
            return lines


def test_ehlo_extensions(mx: Server) -> None:
    s = mx.smtp()
    try:
        features = s.esmtp_features
        for keyword in ("pipelining", "size", "8bitmime", "enhancedstatuscodes"):
            assert keyword in features, features
        assert "starttls" not in features
        assert "auth" not in features
        assert s.docmd("STARTTLS")[0] // 100 in (4, 5)
    finally:
        quit_(s)


def test_every_reply_carries_a_matching_enhanced_status_code(mx: Server) -> None:
    sock = mx.raw()
    f = sock.makefile("rb")
    exempt: list[list[str]] = []
    checked: list[list[str]] = []

    def cmd(line: str, *, exempt_reply: bool = False) -> list[str]:
        sock.sendall(line.encode() + b"\r\n")
        reply = _read_reply(f)
        (exempt if exempt_reply else checked).append(reply)
        return reply

    try:
        greeting = _read_reply(f)
        assert greeting[0].startswith("220 mx2.example.net")
        assert cmd("EHLO client.test", exempt_reply=True)[0].startswith("250-mx2.example.net")
        assert cmd("HELO client.test", exempt_reply=True)[0].startswith("250 mx2.example.net")
        assert cmd("NOOP") == ["250 2.0.0 Ok"]
        assert cmd("RSET")[0].startswith("250 2.0.0")
        assert cmd("VRFY x")[0].startswith("252 ")
        assert cmd("HELP")[0].startswith("214 ")
        assert cmd("FROBNICATE")[0].startswith("500 5.5.2")
        assert cmd("VRFY")[0].startswith("501 ")
        assert cmd("EXPN list")[0].startswith("5")
        assert cmd("RCPT TO:<user@example.com>")[0].startswith("503 ")
        assert cmd("DATA")[0].startswith("503 ")
        assert cmd("MAIL FROM:<a@b.test>")[0].startswith("250 2.1.0")
        assert cmd("MAIL FROM:<a@b.test>")[0].startswith("503 ")
        assert cmd("MAIL FROM:<a@b.test> FOO=BAR")[0][0] == "5"
        assert cmd("DATA")[0].startswith("554 ")
        assert cmd("RCPT TO:<user@elsewhere.test>")[0].startswith("550 5.7.1")
        assert cmd("RCPT TO:<user@example.com> NOTIFY=NEVER BOGUS")[0][0] == "5"
        assert cmd("RCPT TO:<user@example.com>")[0].startswith("250 2.1.5")
        assert cmd("DATA", exempt_reply=True)[0].startswith("354 ")
        sock.sendall(SIMPLE)
        checked.append(_read_reply(f))
        assert checked[-1][0].startswith("250 2.0.0 Ok: queued as ")
        assert cmd("QUIT")[0].startswith("221 2.0.0")
    finally:
        f.close()
        sock.close()
    for reply in checked:
        for line in reply:
            m = ENHANCED.match(line[4:])
            assert m, f"no enhanced status code in {line!r}"
            assert m.group(1) == line[0], f"enhanced code class differs in {line!r}"


# == 8. swaks ====================================================================================
SWAKS = shutil.which("swaks")
needs_swaks = pytest.mark.skipif(SWAKS is None, reason="swaks is not installed (apt install swaks)")


def _swaks(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    assert SWAKS is not None
    return subprocess.run(
        [
            SWAKS,
            "--server", f"127.0.0.1:{server.port}",
            "--local-interface", INTERNET,
            "--helo", "client.test",
            "--timeout", "10",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )  # fmt: skip


@needs_swaks
@pytest.mark.parametrize("pipeline", [True, False], ids=["pipeline", "lockstep"])
def test_swaks_delivers(mx: Server, pipeline: bool) -> None:
    before = set(mx.new())
    args = ["--from", "sender@elsewhere.test", "--to", "user@example.com"]
    result = _swaks(mx, *args, *(["--pipeline"] if pipeline else []))
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    m = re.search(r"queued as ([0-9A-Za-z]+)", out)
    assert m, out
    assert set(mx.new()) - before == {m.group(1)}


@needs_swaks
def test_swaks_relay_attempt_fails(mx: Server) -> None:
    before = mx.new()
    result = _swaks(mx, "--from", "sender@elsewhere.test", "--to", "victim@elsewhere.test")
    out = result.stdout + result.stderr
    assert result.returncode != 0, out
    assert "5.7.1" in out
    assert mx.new() == before


# == 9. the log ==================================================================================
def test_log_has_one_accepted_line_per_message_and_one_refused_line_per_recipient(
    mx: Server,
) -> None:
    s = mx.smtp()
    try:
        mail(s)
        assert rcpt(s, "logged@example.com")[0] == 250
        assert rcpt(s, "refused-one@log-a.test")[0] == 550
        assert rcpt(s, "refused-two@log-b.test")[0] == 550
        assert rcpt(s, "nobody@sub.example.org")[0] == 550
        queue_id = queued_id(*send_data(s, SIMPLE))
    finally:
        quit_(s)
    log = mx.log()
    assert len(re.findall(rf"accepted id={queue_id}\b", log)) == 1, log
    for address in ("refused-one@log-a.test", "refused-two@log-b.test", "nobody@sub.example.org"):
        lines = [ln for ln in log.splitlines() if f"refused rcpt=<{address}>" in ln]
        assert len(lines) == 1, log
        assert "code=550" in lines[0]
        assert "client=127.0.0.9" in lines[0]


def test_log_names_a_syntactically_refused_recipient_like_any_other(mx: Server) -> None:
    s = mx.smtp()
    try:
        mail(s)
        assert rcpt(s, "bad-syntax@log-c.test.")[0] == 553
        assert rcpt(s, "bad%route@log-d.test")[0] == 550
    finally:
        quit_(s)
    lines = [ln for ln in mx.log().splitlines() if "@log-c.test" in ln or "@log-d.test" in ln]
    # The routing refusal is logged as rcpt=<address> ...
    assert [ln for ln in lines if "refused rcpt=<bad%route@log-d.test> " in ln and "code=550" in ln]
    # ... and a syntax refusal the same way, not as rcpt=<<address>>.
    assert [
        ln for ln in lines if "refused rcpt=<bad-syntax@log-c.test.> " in ln and "code=553" in ln
    ], lines
