"""Open-relay suite: the classic relay tricks against the real ``twistd mxbackup``.

Extends test_policy_e2e.py (which covers the plain routing tricks, label-aware matching and
one valid-then-external transaction) with the combinations spammers actually try against a
backup MX: every kind of sender x an external recipient, a HELO claiming to be us, the
primary or localhost, XCLIENT-style spoofing, mixed case and IDN tricks at label boundaries,
percent/bang/quoted/source-route combinations, and pipelined transactions mixing valid and
external recipients.  Finally ``nmap --script smtp-open-relay`` judges the server.

Every client connects from 127.0.0.9, which the default ip_ranges put in "Internet" (only
127.0.0.1 is the trusted "My computer").  No address outside 127.0.0.0/8 is ever connected
to: the external domains below are only strings in RCPT commands.

After every test the spool is checked: no queued envelope may ever name a recipient without a
route (an external recipient), and a test that expects nothing queued checks new/ and env/
did not change.
"""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import SpoolServer, base_config, serve

INTERNET = "127.0.0.9"
HOSTNAME = "mx2.example.net"  # base_config's server.hostname
ROUTED = {"example.com", "*.example.org", "local-sender.test"}
ENHANCED = re.compile(r"^(\d)\d\d[ -](\d)\.\d{1,3}\.\d{1,3}( |$)")


# -- servers ------------------------------------------------------------------------------------
class Server(SpoolServer):
    def client(self, ip: str = INTERNET) -> Client:
        return Client(self.port, ip)

    def assert_nothing_external_queued(self) -> None:
        """The relay invariant: every queued recipient has a route of ours."""
        for queue_id in self.envs():
            env = self.envelope(queue_id)
            for r in env["recipients"]:
                assert r["route"] in ROUTED, (queue_id, r)
                domain = r["address"].rsplit("@", 1)[1].lower()
                assert domain == r["route"] or (
                    r["route"].startswith("*.") and domain.endswith(r["route"][1:])
                ), (queue_id, r)


def _start(tmp: Path, data: dict[str, Any]) -> Iterator[Server]:
    yield from serve(tmp, data, Server)


def _relay_config(tmp: Path) -> dict[str, Any]:
    data = base_config(tmp)
    # A routed domain whose senders count as "local" (hMailServer's "local to external" case;
    # from the Internet range that needs AUTH, so it must be refused).
    data["routes"].append(
        {
            "domain": "local-sender.test",
            "target_host": "127.0.0.1",
            "port": 9,
            "treat_sender_as": "local",
        }
    )
    return data


@pytest.fixture(scope="module")
def mx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """Default ip_ranges: 127.0.0.9 is "Internet"."""
    tmp = tmp_path_factory.mktemp("relay")
    yield from _start(tmp, _relay_config(tmp))


@pytest.fixture
def untouched(mx: Server) -> Iterator[None]:
    """The test must not queue anything at all."""
    before = (mx.new(), mx.envs())
    yield
    assert (mx.new(), mx.envs()) == before
    mx.assert_nothing_external_queued()


# -- a raw client (smtplib re-quotes addresses and cannot pipeline) ------------------------------
class Client:
    def __init__(self, port: int, ip: str) -> None:
        self.sock = socket.create_connection(
            ("127.0.0.1", port), timeout=10, source_address=(ip, 0)
        )
        self.file = self.sock.makefile("rb")
        self.greeting = self.reply()

    def reply(self) -> list[str]:
        lines = []
        while True:
            raw = self.file.readline(2048)
            assert raw.endswith(b"\r\n"), f"connection closed or bad line: {raw!r} after {lines}"
            line = raw[:-2].decode("ascii")
            assert re.match(r"\d{3}[ -]", line), line
            lines.append(line)
            if line[3] == " ":
                return lines

    def cmd(self, line: str | bytes) -> tuple[int, str]:
        """Send one command line; return the final reply line's code and text."""
        data = line.encode("utf-8") if isinstance(line, str) else line
        self.sock.sendall(data + b"\r\n")
        last = self.reply()[-1]
        return int(last[:3]), last[4:]

    def pipeline(self, lines: list[str]) -> list[tuple[int, str]]:
        self.sock.sendall(b"".join(line.encode() + b"\r\n" for line in lines))
        out = []
        for _ in lines:
            last = self.reply()[-1]
            out.append((int(last[:3]), last[4:]))
        return out

    def close(self) -> None:
        try:
            self.sock.sendall(b"QUIT\r\n")
            self.reply()
        except (OSError, AssertionError):
            pass
        self.file.close()
        self.sock.close()


def refused(code: int, text: str) -> bool:
    """A permanent refusal carrying a matching enhanced status code."""
    m = ENHANCED.match(f"{code} {text}")
    return code // 100 == 5 and m is not None and m.group(1) == m.group(2)


SIMPLE = b"From: a@elsewhere.test\r\nSubject: relay test\r\n\r\nhello\r\n.\r\n"


def try_relay(
    mx: Server,
    sender: str,
    recipients: list[str],
    helo: str = "client.test",
    verb: str = "EHLO",
    mail_params: str = "",
) -> list[tuple[int, str]]:
    """One transaction: the RCPT replies; then DATA must find no valid recipient."""
    c = mx.client()
    try:
        code, text = c.cmd(f"{verb} {helo}")
        assert code == 250, (code, text)
        code, text = c.cmd(f"MAIL FROM:<{sender}>{mail_params}")
        assert code == 250, (sender, code, text)
        out = [c.cmd(f"RCPT TO:<{r}>") for r in recipients]
        code, text = c.cmd("DATA")
        assert (code, text) == (554, "5.5.1 No valid recipients"), (code, text)
        return out
    finally:
        c.close()


# == 1. every kind of sender x an external recipient ===========================================
SENDERS = {
    "null": "",
    "external": "someone@elsewhere.test",
    "same-domain-as-recipient": "boss@victim.test",
    "routed-domain": "user@example.com",
    "routed-domain-mixed-case": "User@EXAMPLE.Com",
    "routed-wildcard": "alice@sub.example.org",
    "routed-local-kind": "user@local-sender.test",  # treat_sender_as: local
    "own-hostname": f"user@{HOSTNAME}",
    "own-hostname-upper": f"USER@{HOSTNAME.upper()}",
    "postmaster-own-hostname": f"postmaster@{HOSTNAME}",
    "postmaster-routed": "postmaster@example.com",
    "postmaster-external": "postmaster@elsewhere.test",
    "mailer-daemon": f"MAILER-DAEMON@{HOSTNAME}",
    "address-literal-loopback": "antispam@[127.0.0.1]",
    "address-literal-client": f"antispam@[{INTERNET}]",
    "address-literal-v6": "antispam@[IPv6:::1]",
    "quoted-local": '"john doe"@example.com',
}
EXTERNAL = [
    "victim@victim.test",
    "Victim@VICTIM.TEST",
    "postmaster@victim.test",
    "relaytest@nmap.scanme.org",
]


@pytest.mark.parametrize("sender", list(SENDERS.values()), ids=list(SENDERS))
def test_no_sender_kind_can_relay_to_an_external_recipient(
    mx: Server, untouched: None, sender: str
) -> None:
    for code, text in try_relay(mx, sender, EXTERNAL):
        assert (code, text.split(" ", 1)[0]) == (550, "5.7.1"), (sender, code, text)


@pytest.mark.parametrize(
    "params",
    [
        " AUTH=<>",
        f" AUTH=postmaster@{HOSTNAME}",  # RFC 4954 5: AUTH= on MAIL is not authentication
        " BODY=8BITMIME SIZE=100",
        " AUTH=user@example.com BODY=7BIT",
    ],
)
def test_mail_parameters_do_not_grant_relaying(mx: Server, untouched: None, params: str) -> None:
    for code, text in try_relay(mx, "someone@elsewhere.test", EXTERNAL, mail_params=params):
        assert (code, text.split(" ", 1)[0]) == (550, "5.7.1"), (params, code, text)


# == 2. a HELO claiming to be someone trusted ===================================================
HELOS = [
    "localhost",
    "LOCALHOST",
    "localhost.localdomain",
    "127.0.0.1",
    "[127.0.0.1]",
    "[IPv6:::1]",
    f"[{INTERNET}]",
    HOSTNAME,  # the server's own name
    HOSTNAME.upper(),
    "example.com",  # the domain we back up ...
    "mx1.example.com",  # ... and its primary's conventional name
    "primary.example.com",
]


@pytest.mark.parametrize("verb", ["EHLO", "HELO"])
@pytest.mark.parametrize("helo", HELOS)
def test_helo_claiming_to_be_trusted_does_not_grant_relaying(
    mx: Server, untouched: None, helo: str, verb: str
) -> None:
    for sender in ("someone@elsewhere.test", f"postmaster@{HOSTNAME}", ""):
        for code, text in try_relay(mx, sender, ["victim@victim.test"], helo=helo, verb=verb):
            assert (code, text.split(" ", 1)[0]) == (550, "5.7.1"), (helo, sender, code, text)


def test_second_helo_and_rset_do_not_change_trust(mx: Server, untouched: None) -> None:
    c = mx.client()
    try:
        assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd("EHLO localhost")[0] == 250
        assert c.cmd("HELO [127.0.0.1]")[0] == 250
        assert c.cmd("RSET")[0] == 250
        assert c.cmd(f"EHLO {HOSTNAME}")[0] == 250
        assert c.cmd("MAIL FROM:<someone@elsewhere.test>")[0] == 250
        assert refused(*c.cmd("RCPT TO:<victim@victim.test>"))
        assert c.cmd("DATA")[0] == 554
    finally:
        c.close()


@pytest.mark.parametrize(
    "spoof",
    [
        "XCLIENT ADDR=127.0.0.1 NAME=localhost",
        "XFORWARD ADDR=127.0.0.1",
        "PROXY TCP4 127.0.0.1 127.0.0.1 25 25",
    ],
)
def test_client_address_spoofing_commands_are_not_honoured(
    mx: Server, untouched: None, spoof: str
) -> None:
    c = mx.client()
    try:
        assert c.cmd("EHLO localhost")[0] == 250
        code, text = c.cmd(spoof)
        assert code // 100 == 5, (code, text)
        assert c.cmd("EHLO localhost")[0] == 250
        assert c.cmd("MAIL FROM:<>")[0] == 250
        assert refused(*c.cmd("RCPT TO:<victim@victim.test>"))
        assert c.cmd("DATA")[0] == 554
    finally:
        c.close()


# == 3. mixed case and label-boundary / IDN tricks =============================================
LABEL_TRICKS = [
    "user@EXAMPLE.COM.victim.test",
    "user@Example.Com.Victim.Test",
    "user@EVILEXAMPLE.COM",
    "user@evil-example.com",
    "user@example-com.victim.test",
    "user@exampleXcom",
    "user@example.comm",
    "user@example.co",
    "user@xample.com",
    "user@wwwexample.com",
    "user@example.com.",  # trailing dot
    "user@example..com",
    "user@.example.com",
    "user@-example.com",
    "user@example.com-",
    "user@example.com.victim.test.",
    "user@sub.example.org.victim.test",
    "user@SUB.EXAMPLE.ORG.VICTIM.TEST",
    "user@subexample.org",
    "user@sub-example.org",
    "alice@sub.example.orgx",
    "user@EXAMPLE.ORG",  # the wildcard's apex
    "user@local-sender.test.victim.test",
    # IDN / punycode look-alikes of the routed domain (ACE labels are ordinary ASCII labels
    # and must match nothing of ours)
    "user@xn--exmple-cua.com",  # exämple.com
    "user@xn--example-9ua.com",
    "user@example.xn--com-9ua",
    "user@xn--e1awd7f.com",  # cyrillic look-alike
    "user@xn--example.com",
    "user@example.com\\.victim.test",
    # raw UTF-8 (no SMTPUTF8): fullwidth/ideographic dots are label separators to IDNA
    "user@example\u3002com",
    "user@example\uff0ecom",
    "user@example.com\u3002victim.test",
    "user@ex\u00e4mple.com",
    "user@\u212aexample.com",  # KELVIN SIGN lower-cases to "k"
    "user@example.com\u200b",  # zero-width space
    "user@\u0435xample.com",  # cyrillic "e"
]


@pytest.mark.parametrize("address", LABEL_TRICKS, ids=repr)
def test_label_boundary_and_idn_tricks_are_refused(
    mx: Server, untouched: None, address: str
) -> None:
    (reply,) = try_relay(mx, "someone@elsewhere.test", [address])
    assert refused(*reply), (address, reply)


# == 4. percent / bang / quoted / source-route combinations ====================================
ROUTING_COMBOS = [
    "victim%victim.test@EXAMPLE.COM",
    "VICTIM%VICTIM.TEST@example.com",
    "victim%victim.test%example.com@example.com",
    "victim%victim.test@example.com%example.com",
    "victim%victim.test@sub.example.org",
    "alice%victim.test@sub.example.org",
    f"victim%victim.test@{HOSTNAME}",
    "victim%victim.test@[127.0.0.1]",
    f"victim%victim.test@[{INTERNET}]",
    "victim%victim.test",
    "victim.test!victim",
    "victim.test!victim@example.com",
    "victim.test!victim%example.com@example.com",
    "example.com!victim.test!victim@example.com",
    f"victim.test!victim@{HOSTNAME}",
    "victim.test!victim@[127.0.0.1]",
    '"victim@victim.test"',
    '"victim@victim.test"@example.com',
    '"victim@victim.test"@EXAMPLE.COM',
    '"victim%victim.test"@example.com',
    '"victim.test!victim"@example.com',
    f'"victim@victim.test"@{HOSTNAME}',
    '"victim@victim.test"@[127.0.0.1]',
    '"victim\\@victim.test"@example.com',
    '"victim\\%victim.test"@example.com',
    '"victim\\"@victim.test"@example.com',
    '"victim"@victim.test',
    '"Victim"@VICTIM.TEST',
    '"victim@victim.test"@victim.test',
    "victim\\@victim.test@example.com",
    "victim@victim.test@example.com",
    "victim@example.com@victim.test",
    f"victim@victim.test@{HOSTNAME}",
    "victim@victim.test@[127.0.0.1]",
    "@example.com:victim@victim.test",
    "@EXAMPLE.COM:victim@victim.test",
    f"@{HOSTNAME}:victim@victim.test",
    "@[127.0.0.1]:victim@victim.test",
    "@example.com,@victim.test:victim@example.com",
    "@victim.test:victim%victim.test@example.com",
    "victim@[127.0.0.1]",
    "victim@[IPv6:::1]",
    f"victim@[{INTERNET}]",
    "victim@[victim.test]",
    "victim@[example.com]",
    "victim@victim.test>@example.com",
    "victim@victim.test> <victim2@victim.test",
    "<victim@victim.test>",
    "victim@victim.test\tx@example.com",
]


@pytest.mark.parametrize("address", ROUTING_COMBOS, ids=repr)
def test_routing_combinations_are_refused(mx: Server, untouched: None, address: str) -> None:
    (reply,) = try_relay(mx, "someone@elsewhere.test", [address])
    assert refused(*reply), (address, reply)


@pytest.mark.parametrize(
    "address", ["victim%victim.test@example.com", '"victim@victim.test"@example.com']
)
def test_routing_tricks_are_refused_without_angle_brackets(
    mx: Server, untouched: None, address: str
) -> None:
    c = mx.client()
    try:
        assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd("MAIL FROM:someone@elsewhere.test")[0] == 250
        assert refused(*c.cmd(f"RCPT TO:{address}"))
        assert refused(*c.cmd(f"RCPT TO: {address}"))
        assert c.cmd("DATA")[0] == 554
    finally:
        c.close()


# == 5. valid recipients mixed with external ones: only the valid ones are queued ===============
QUEUED = re.compile(r"2\.0\.0 Ok: queued as ([0-9A-Za-z]+)$")


def _queued_id(code: int, text: str) -> str:
    assert code == 250, (code, text)
    m = QUEUED.match(text)
    assert m, text
    return m.group(1)


@pytest.mark.parametrize(
    ("helo", "sender"),
    [
        ("client.test", "someone@elsewhere.test"),
        ("localhost", ""),
        (HOSTNAME, f"postmaster@{HOSTNAME}"),
        ("[127.0.0.1]", "user@example.com"),
    ],
)
def test_pipelined_valid_and_external_recipients_queue_only_the_valid_ones(
    mx: Server, helo: str, sender: str
) -> None:
    valid = ["user@example.com", "alice@sub.example.org", "User2@EXAMPLE.COM"]
    external = [
        "victim@victim.test",
        "victim%victim.test@example.com",
        '"victim@victim.test"@example.com',
        "@example.com:victim@victim.test",
        "victim.test!victim@example.com",
        "victim@[127.0.0.1]",
        "user@example.com.victim.test",
    ]
    rcpts = [valid[0], *external[:4], valid[1], *external[4:], valid[2]]
    before = set(mx.new())
    c = mx.client()
    try:
        replies = c.pipeline(
            [f"EHLO {helo}", f"MAIL FROM:<{sender}>", *[f"RCPT TO:<{r}>" for r in rcpts], "DATA"]
        )
        assert [code for code, _ in replies[:2]] == [250, 250], replies
        by_rcpt = dict(zip(rcpts, replies[2:-1], strict=True))
        for r in valid:
            assert by_rcpt[r][0] == 250, (r, by_rcpt[r])
        for r in external:
            assert refused(*by_rcpt[r]), (r, by_rcpt[r])
        assert replies[-1][0] == 354, replies[-1]
        c.sock.sendall(SIMPLE)
        queue_id = _queued_id(*_final(c))
    finally:
        c.close()
    assert set(mx.new()) - before == {queue_id}
    env = mx.envelope(queue_id)
    assert [r["address"].lower() for r in env["recipients"]] == [v.lower() for v in valid]
    assert (mx.spool / "new" / queue_id).read_bytes().endswith(SIMPLE[:-3])
    mx.assert_nothing_external_queued()


def _final(c: Client) -> tuple[int, str]:
    last = c.reply()[-1]
    return int(last[:3]), last[4:]


def test_external_recipients_after_a_queued_message_in_the_same_session(mx: Server) -> None:
    """The 250 of a first transaction must not open the door for the next one."""
    before = set(mx.new())
    c = mx.client()
    try:
        assert c.cmd("EHLO localhost")[0] == 250
        assert c.cmd("MAIL FROM:<someone@elsewhere.test>")[0] == 250
        assert c.cmd("RCPT TO:<user@example.com>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.sock.sendall(SIMPLE)
        first = _queued_id(*_final(c))
        assert c.cmd("MAIL FROM:<someone@elsewhere.test>")[0] == 250
        assert refused(*c.cmd("RCPT TO:<victim@victim.test>"))
        assert c.cmd("DATA")[0] == 554
        assert c.cmd("RSET")[0] == 250
        assert c.cmd("MAIL FROM:<user@example.com>")[0] == 250
        assert refused(*c.cmd("RCPT TO:<victim@victim.test>"))
        assert c.cmd("DATA")[0] == 554
    finally:
        c.close()
    assert set(mx.new()) - before == {first}
    mx.assert_nothing_external_queued()


def test_smuggled_second_transaction_cannot_reach_an_external_recipient(mx: Server) -> None:
    """A body carrying a fake end of data and a relay attempt stays one refused message."""
    before = set(mx.new())
    c = mx.client()
    try:
        assert c.cmd("EHLO client.test")[0] == 250
        assert c.cmd("MAIL FROM:<someone@elsewhere.test>")[0] == 250
        assert c.cmd("RCPT TO:<user@example.com>")[0] == 250
        assert c.cmd("DATA")[0] == 354
        c.sock.sendall(
            b"Subject: one\r\n\r\nfirst\n.\r\nMAIL FROM:<a@elsewhere.test>\r\n"
            b"RCPT TO:<victim@victim.test>\r\nDATA\r\nSubject: two\r\n\r\nspam\r\n.\r\n"
        )
        code, text = _final(c)
        assert code == 554 and text.startswith("5.6.0"), (code, text)
        assert c.cmd("NOOP")[0] == 250
    finally:
        c.close()
    assert set(mx.new()) == before
    mx.assert_nothing_external_queued()


# == 6. nmap's smtp-open-relay script ===========================================================
NMAP = shutil.which("nmap")
needs_nmap = pytest.mark.skipif(
    NMAP is None,
    reason="nmap is not installed (apt-get install nmap, or run tests/install-system-deps.sh)",
)
NMAP_SCRIPT = "/usr/share/nmap/scripts/smtp-open-relay.nse"


def _nmap(port: int, source_ip: str | None = None) -> str:
    assert NMAP is not None
    if not Path(NMAP_SCRIPT).exists():
        pytest.skip(f"nmap is installed but its script {NMAP_SCRIPT} is missing")
    source = ["-S", source_ip, "-e", "lo"] if source_ip else []
    result = subprocess.run(
        # "+" forces the script to run: its portrule only matches ports 25/465/587 or a
        # service detected as smtp, and our ephemeral port is neither (without "+" nmap
        # silently skips the script and prints nothing about relaying).
        # -n: no DNS; -Pn: no host discovery; -vv: list any relay combination found.
        [NMAP, "-n", "-Pn", "-vv", "-p", str(port), *source, "--script", "+smtp-open-relay",
         "127.0.0.1"],
        capture_output=True,
        text=True,
        timeout=60,
    )  # fmt: skip
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert "smtp-open-relay:" in out, f"the script did not run:\n{out}"
    return out


NOT_A_RELAY = re.compile(
    r"smtp-open-relay: (Server doesn't seem to be an open relay, all tests failed"
    r"|Server isn't an open relay, authentication needed)"
)


@pytest.fixture(scope="module")
def untrusted_mx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """nmap connects from 127.0.0.1, which the *default* ip_ranges trust ("My computer":
    relaying allowed, as in hMailServer).  This server has a single "Internet" range
    (0.0.0.0/0 and ::/0, default allow and require_auth), so 127.0.0.1 is untrusted here."""
    tmp = tmp_path_factory.mktemp("relay-nmap")
    data = _relay_config(tmp)
    data["ip_ranges"] = [{"name": "Internet", "addresses": ["0.0.0.0/0", "::/0"]}]
    yield from _start(tmp, data)


@needs_nmap
def test_nmap_smtp_open_relay_says_not_an_open_relay(untrusted_mx: Server) -> None:
    before = (untrusted_mx.new(), untrusted_mx.envs())
    out = _nmap(untrusted_mx.port)
    assert NOT_A_RELAY.search(out), out
    assert "Server is an open relay" not in out, out
    assert (untrusted_mx.new(), untrusted_mx.envs()) == before
    untrusted_mx.assert_nothing_external_queued()
    # The script really talked to us: every one of its 16 attempts was refused and logged.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        refusals = untrusted_mx.twistd.logtext().count("client=127.0.0.1 code=5")
        if refusals >= 16:
            break
        time.sleep(0.05)  # polling for the log to be flushed
    assert refusals >= 16, untrusted_mx.twistd.logtext()[-4000:]


@needs_nmap
def test_nmap_from_an_internet_address_against_the_default_ranges(mx: Server) -> None:
    """The same script, from 127.0.0.9 (nmap -S) against the default configuration."""
    before = (mx.new(), mx.envs())
    out = _nmap(mx.port, source_ip=INTERNET)
    assert NOT_A_RELAY.search(out), out
    assert "Server is an open relay" not in out, out
    assert (mx.new(), mx.envs()) == before
    mx.assert_nothing_external_queued()


@needs_nmap
def test_nmap_control_trusted_address_is_reported_as_relay(mx: Server) -> None:
    """Control: from the trusted "My computer" range relaying is allowed by design, and the
    script must see it, otherwise the two tests above would prove nothing.  Nothing is
    queued: the script never sends DATA."""
    before = (mx.new(), mx.envs())
    out = _nmap(mx.port)
    assert "Server is an open relay" in out, out
    assert (mx.new(), mx.envs()) == before
