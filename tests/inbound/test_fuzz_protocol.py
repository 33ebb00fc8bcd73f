"""Property-based fuzzing of the inbound protocol (Hypothesis), in memory.

Random and mutated command streams -- random bytes, NULs, huge arguments, bare CR and LF,
valid commands interleaved with STARTTLS / AUTH / DATA / BDAT / garbage -- are cut at random
packet boundaries and fed to one ``SMTPServer`` on a TLS-capable ``StringTransport``, with
the Clock advanced and the transport pausing and resuming the protocol (as a real transport
does when the client stops reading) at random points.  Spool commits and password checks
complete asynchronously (on the Clock), so pipelined input meets a busy protocol.

Invariants, checked after every packet:
- no exception escapes ``dataReceived`` (nor any other entry point), nothing is logged as a
  failure (an "internal error" reply means a handler raised);
- the output is a sequence of CRLF-terminated reply lines ``^\\d{3}[ -]``; continuation
  lines carry their final line's code; final codes are 2xx-5xx; every 4xx/5xx final line
  carries an enhanced status code whose class is its first digit;
- the protocol's input buffer stays bounded: ``len(proto._buffer) < 70_000`` after each
  packet of at most 65536 octets;
and after the stream, ``\\r\\n.\\r\\n``, ``\\r\\n`` and ``QUIT\\r\\n`` get a 221, unless the server
had already closed the connection (with a 221 or 421); finally no partial file is left in
tmp/ and every message in new/ has its envelope in env/.
"""

from __future__ import annotations

import base64
import gc
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import bcrypt
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from twisted.internet import defer, task
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.testing import StringTransport
from twisted.logger import globalLogPublisher
from zope.interface import implementer

from helpers import Harness, base_config, spool_files
from mxbackup.inbound.chunking import Chunk

USER, PASSWORD = "fuzz-user", "fuzz-pass"
_HASH = bcrypt.hashpw(b"unused", bcrypt.gensalt(4)).decode()  # checks go to check_password
MAX_PACKET = 65536
BUFFER_BOUND = 70_000

FINAL_LINE = re.compile(rb"\d{3} ")
ANY_LINE = re.compile(rb"\d{3}[ -]")
ENHANCED = re.compile(rb"([245])\.\d{1,3}\.\d{1,3}(?: |$)")

# Long Hypothesis runs belong to the slow tier (``-m e2e``); the fast one has the unit tests.
pytestmark = pytest.mark.e2e

SETTINGS = settings(
    max_examples=int(os.environ.get("MXBACKUP_FUZZ_EXAMPLES", "120")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)


# -- the connection under test -------------------------------------------------------------------
@implementer(ITLSTransport)
class TLSStringTransport(StringTransport):
    """A StringTransport that can "start TLS": it only records the call, so the STARTTLS
    paths (and AUTH, offered only after it) are reachable in memory.

    Lenient like a real transport: Twisted's ``FileDescriptor.resumeProducing`` after
    ``loseConnection`` is a no-op, while a strict StringTransport raises."""

    def __init__(self, *a: Any, **kw: Any) -> None:
        super().__init__(*a, lenient=True, **kw)
        self.tls_starts = 0
        self.on_abort: Any = None

    def abortConnection(self) -> None:
        # A real transport drops the connection at once and calls connectionLost.
        super().abortConnection()
        if self.on_abort is not None:
            self.on_abort()

    def startTLS(self, ctx: Any, normal: bool = True) -> None:
        self.tls_starts += 1


class Flusher:
    """ETRN's view of the queue."""

    def keys_for_domain(self, domain: str) -> list[str]:
        return [domain] if domain == "example.com" else []

    def flush(self, key: str | None = None) -> int:
        return 1


class Session:
    """One fuzzed connection and the invariants checked as it runs."""

    def __init__(self, root: Path, client_ip: str) -> None:
        data = base_config(root, max_recipients=5, max_message_size=200_000)
        data["accounts"] = [{"username": USER, "password_hash": _HASH}]

        # Commits and password checks finish later, on the Clock (like a thread pool would).
        def run_later(fn: Any, *args: Any) -> defer.Deferred:
            return task.deferLater(self.clock, 0, fn, *args)

        def check_password(user: str, password: str) -> defer.Deferred:
            return task.deferLater(self.clock, 0, lambda: user == USER and password == PASSWORD)

        self.h = Harness(
            root, data, client_ip, runner=run_later, check_password=check_password,
            tls_context=object(),
        )  # fmt: skip
        self.clock = self.h.clock
        self.h.factory.etrn = Flusher()
        self.spool = root / "spool"
        addr = IPv4Address("TCP", client_ip, 40000)
        self.proto = self.h.factory.buildProtocol(addr)
        self.transport = TLSStringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 25), peerAddress=addr
        )
        self.proto.makeConnection(self.transport)
        self.lost = False
        self.transport.on_abort = lambda: self.clock.callLater(0, self.connection_lost)
        self.paused_by_transport = False
        self.output = b""
        self.checked = 0  # octets of output already checked
        self.closing_reply: bytes | None = None  # the 221 or 421 that ended the session

    def connection_lost(self) -> None:
        if not self.lost:
            self.lost = True
            self.proto.connectionLost(None)

    # The transport's side of the producer contract.
    def transport_pause(self) -> None:
        if not self.transport.disconnecting and not self.paused_by_transport:
            self.paused_by_transport = True
            self.proto.pauseProducing()

    def settle(self) -> None:
        """Let the reactor run what is due now; if the transport paused the protocol, the
        client has read its replies: resume.  Afterwards reading is not paused (unless the
        connection is closing)."""
        for _ in range(50):
            self.clock.advance(0)
            if self.paused_by_transport:
                self.paused_by_transport = False
                self.proto.resumeProducing()
            if self.transport.producerState != "paused" or self.transport.disconnecting:
                break
        self.check_output()
        if not self.transport.disconnecting:
            assert self.transport.producerState == "producing", "reading stays paused"

    def run_due(self) -> None:
        """Run what the reactor would run now (finished commits and password checks)."""
        for _ in range(100):
            now = self.clock.seconds()
            if not any(call.getTime() <= now for call in self.clock.getDelayedCalls()):
                break
            self.clock.advance(0)

    def tick(self, seconds: float) -> None:
        # Work in flight finishes first: time passes while the *client* is silent.  (The
        # idle timer is tested deterministically in tests/inbound/test_server.py.)
        self.run_due()
        # Step from one timed call to the next, as a reactor would, so that what a call
        # schedules "now" (connectionLost after an abort) runs before later calls.
        target = self.clock.seconds() + seconds
        for _ in range(1000):
            pending = [c.getTime() for c in self.clock.getDelayedCalls()]
            when = min([t for t in pending if t <= target], default=target)
            self.clock.advance(max(when - self.clock.seconds(), 0))
            self.run_due()
            if when >= target:
                break
        self.check_output()

    def deliver(self, packet: bytes) -> None:
        assert len(packet) <= MAX_PACKET
        self.settle()
        if self.transport.disconnecting:
            return  # a real transport stops reading once the protocol closes
        self.proto.dataReceived(packet)
        assert len(self.proto._buffer) < BUFFER_BOUND, len(self.proto._buffer)
        self.check_output()

    # Reply well-formedness over everything written so far.
    def check_output(self) -> None:
        self.output = self.transport.value()
        new = self.output[self.checked :]
        end = new.rfind(b"\r\n")
        if end < 0:
            assert len(new) < 4096, "a reply line without CRLF"
            return
        lines = new[:end].split(b"\r\n")
        self.checked += end + 2
        code_of_continuation: bytes | None = None
        for line in lines:
            assert self.closing_reply is None, (
                "reply after the closing one",
                self.closing_reply,
                line[:200],
            )
            assert b"\n" not in line and b"\r" not in line, line[:200]
            assert ANY_LINE.match(line), line[:200]
            code = line[:3]
            if code_of_continuation is not None:
                assert code == code_of_continuation, ("continuation code differs", line[:200])
            if line[3:4] == b"-":
                code_of_continuation = code
                continue
            code_of_continuation = None
            assert b"200" <= code <= b"599", line[:200]
            if code in (b"221", b"421"):
                self.closing_reply = line
            if code[:1] in b"45":
                m = ENHANCED.match(line[4:])
                assert m, f"no enhanced status code: {line[:200]!r}"
                assert m.group(1) == code[:1], f"enhanced code class differs: {line[:200]!r}"

    def final_lines(self) -> list[bytes]:
        return [ln for ln in self.output.split(b"\r\n") if FINAL_LINE.match(ln)]

    def _in_huge_chunk(self) -> bool:
        chunk = self.proto._stream
        return isinstance(chunk, Chunk) and chunk.remaining > MAX_PACKET

    def _leave_modes(self) -> bool:
        """End DATA and AUTH with the packets a client would send, reading any BDAT chunk
        to its end first, whatever it holds: also one that a command completed by these very
        packets started (``BDAT 10 LAST`` without its CRLF). False if a chunk is too big."""
        for packet in (b"\r\n.\r\n", b"\r\n", b""):
            chunk = self.proto._stream
            if self._in_huge_chunk():
                return False
            if isinstance(chunk, Chunk) and not self.transport.disconnecting:
                self.deliver(b"x" * chunk.remaining)
            if packet:
                self.deliver(packet)
        return True

    def _quit(self) -> None:
        mark = len(self.final_lines())
        if not self._leave_modes():
            return  # (a mutated BDAT size: the client would have to send it all first)
        self.deliver(b"QUIT\r\n")
        self.settle()
        assert self.transport.disconnecting, "QUIT did not close"
        tail = self.final_lines()[mark:]
        assert tail, "no reply to the final QUIT"
        if tail[-1][:4] != b"221 ":
            # only acceptable if the server closed first (error limit reached by the two
            # empty commands): then a 421 was sent
            assert any(ln[:4] == b"421 " for ln in tail), tail

    def finish(self) -> None:
        """Leave DATA / AUTH modes, QUIT, and check the spool."""
        closed_before = self.transport.disconnecting
        if closed_before:
            finals = self.final_lines()
            # Either said goodbye, or aborted a client that had stopped reading at its
            # idle timeout (a reply would never reach it).
            aborted = getattr(self.transport, "disconnected", False) and self.proto._output_paused
            assert aborted or any(ln[:4] in (b"221 ", b"421 ") for ln in finals), finals[-5:]
        else:
            self._quit()
        # The transport goes away; nothing half-written may remain.
        self.connection_lost()
        self.clock.advance(0)
        assert spool_files(self.spool, "tmp") == []
        assert spool_files(self.spool, "new") == spool_files(self.spool, "env")
        assert self.h.factory.connections == 0 and not self.h.factory.per_ip


@pytest.fixture(scope="module")
def failures() -> Iterator[list[Any]]:
    """Twisted log events that carry a failure (an exception somewhere, caught or not);
    cleared at the start of every example."""
    seen: list[Any] = []

    def observer(event: dict[str, Any]) -> None:
        if "log_failure" in event:
            seen.append(event)

    globalLogPublisher.addObserver(observer)
    try:
        yield seen
    finally:
        globalLogPublisher.removeObserver(observer)


def _describe(events: list[Any]) -> str:
    return "\n".join(str(e["log_failure"].getTraceback())[-1500:] for e in events[:3])


def run_session(events: list[tuple[str, Any]], client_ip: str, failures: list[Any]) -> Session:
    root = Path(tempfile.mkdtemp(prefix="mxfuzz-", dir=_TMP_DIR))
    try:
        failures.clear()
        s = Session(root, client_ip)
        s.check_output()
        for kind, value in events:
            if kind == "data":
                for i in range(0, len(value), MAX_PACKET):
                    s.deliver(value[i : i + MAX_PACKET])
            elif kind == "tick":
                s.tick(value)
            elif kind == "pause":
                s.transport_pause()
            elif kind == "settle":
                s.settle()
        s.finish()
        gc.collect()  # an unhandled error in a Deferred is logged when it is collected
        assert not failures, _describe(failures)
        return s
    finally:
        shutil.rmtree(root, ignore_errors=True)


_TMP_DIR = "/dev/shm" if os.access("/dev/shm", os.W_OK) else None  # fsync is cheap on tmpfs


# -- strategies ---------------------------------------------------------------------------
def b64(raw: bytes) -> bytes:
    return base64.b64encode(raw)


GOOD_PLAIN = b64(b"\0" + USER.encode() + b"\0" + PASSWORD.encode())
COMMANDS = [
    b"EHLO c.test",
    b"HELO c.test",
    b"EHLO",
    b"MAIL FROM:<s@sender.test>",
    b"MAIL FROM:<>",
    b"MAIL FROM:<s@sender.test> SIZE=1000 BODY=8BITMIME",
    b"MAIL FROM:<s@sender.test> SIZE=999999999",
    b"MAIL FROM:<s@sender.test> AUTH=<>",
    b"MAIL FROM:s@sender.test",
    b"RCPT TO:<u@example.com>",
    b"RCPT TO:<alice@sub.example.org>",
    b"RCPT TO:<x@elsewhere.test>",
    b"RCPT TO:<u%x@example.com>",
    b"RCPT TO:<@a.test:u@example.com>",
    b'RCPT TO:<"a b"@example.com>',
    b"RCPT TO:<u@example.com> NOTIFY=NEVER",
    "RCPT TO:<j\u00fcrgen@example.com>".encode(),
    b"DATA",
    b"DATA x",
    b"BDAT 10 LAST",
    b"BDAT 0",
    b"BDAT 0 LAST",
    b"BDAT 12\r\nQUIT\r\nRSET\r\n",
    b"BDAT 999999999999",
    b"MAIL FROM:<j\xc3\xbcrgen@b\xc3\xbccher.example> SMTPUTF8 RET=HDRS ENVID=a+2B",
    b"RCPT TO:<\xc3\xbc@example.com> NOTIFY=SUCCESS,DELAY ORCPT=rfc822;u+40x",
    b"RCPT TO:<u\xef\xbc\xa0x@example.com>",
    b"RSET",
    b"NOOP",
    b"NOOP x",
    b"VRFY u",
    b"VRFY",
    b"EXPN list",
    b"HELP",
    b"ETRN example.com",
    b"ETRN @example.com",
    b"ETRN #example.com",
    b"ETRN",
    b"STARTTLS",
    b"STARTTLS x",
    b"AUTH PLAIN",
    b"AUTH LOGIN",
    b"AUTH CRAM-MD5",
    b"AUTH PLAIN " + GOOD_PLAIN,
    b"AUTH PLAIN " + b64(b"\0" + USER.encode() + b"\0wrong"),
    b"AUTH PLAIN =",
    b"AUTH LOGIN " + b64(USER.encode()),
    GOOD_PLAIN,
    b64(USER.encode()),
    b64(PASSWORD.encode()),
    b64(b"\xff\xfe"),
    b"*",
    b"=",
    b"!!notbase64",
    b".",
    b"..",
    b"",
    b"Subject: fuzz",
    b"Received: from x by y",
    b"X-Long: " + b"h" * 990,
    b"QUIT",
    b"\x00",
    b"NOOP\x00",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03",  # a TLS ClientHello in plain text
    b"GET / HTTP/1.1",
    b"\xff\xfd\x18",  # telnet negotiation
]
ENDINGS = [b"\r\n", b"\r\n", b"\r\n", b"\r\n", b"\n", b"\r", b"", b"\r\r\n", b"\n\r"]
HUGE = [100, 510, 511, 512, 513, 998, 999, 1000, 1001, 12287, 12288, 12289, 65535, 70000, 140000]

huge_argument = st.builds(
    lambda verb, n, fill: verb + fill * n,
    st.sampled_from([b"NOOP ", b"MAIL FROM:<", b"RCPT TO:<", b"EHLO ", b"AUTH PLAIN ", b"", b"x"]),
    st.sampled_from(HUGE),
    st.sampled_from([b"A", b"\x00", b"\r", b"\n", b".", b" ", b"\xff"]),
)
garbage = st.binary(min_size=1, max_size=80)
printable = st.text(alphabet=st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=60).map(
    lambda t: t.encode()
)
token = st.one_of(
    st.sampled_from(COMMANDS).filter(lambda c: c != b"QUIT"),  # QUIT: rarely, below
    st.sampled_from(COMMANDS),
    huge_argument,
    garbage,
    printable,
    st.builds(lambda v, a: v + b" " + a, st.sampled_from([c.split(b" ")[0] for c in COMMANDS]),
              printable),
)  # fmt: skip
line = st.builds(lambda t, e: t + e, token, st.sampled_from(ENDINGS))


@st.composite
def packets_and_events(draw: Any, stream: bytes) -> list[tuple[str, Any]]:
    """Cut ``stream`` at random boundaries; between packets maybe advance the Clock, let the
    reactor run, or have the transport pause the protocol (the client stopped reading)."""
    n = len(stream)
    cuts = sorted(set(draw(st.lists(st.integers(0, n), max_size=12))))
    events: list[tuple[str, Any]] = []
    start = 0
    for cut in [*cuts, n]:
        if cut > start:
            events.append(("data", stream[start:cut]))
            start = cut
        extra = draw(st.sampled_from(["none"] * 6 + ["settle", "pause", "tick-small", "tick-big"]))
        if extra == "settle":
            events.append(("settle", None))
        elif extra == "pause":
            events.append(("pause", None))
        elif extra == "tick-small":
            events.append(("tick", draw(st.sampled_from([0, 0.5, 1, 10]))))
        elif extra == "tick-big":
            # idle_timeout is 300 s; CLOSE_GRACE 10 s
            events.append(("tick", draw(st.sampled_from([299, 300, 301, 320]))))
    return events


@st.composite
def command_streams(draw: Any) -> list[tuple[str, Any]]:
    lines = draw(st.lists(line, min_size=1, max_size=40))
    return draw(packets_and_events(b"".join(lines)))


VALID_SESSION = (
    b"EHLO c.test\r\nSTARTTLS\r\nEHLO c.test\r\nAUTH PLAIN " + GOOD_PLAIN + b"\r\n"
    b"MAIL FROM:<s@sender.test> SIZE=100\r\nRCPT TO:<u@example.com>\r\n"
    b"RCPT TO:<x@elsewhere.test>\r\nDATA\r\nSubject: one\r\n\r\n..dot\r\nbody\r\n.\r\n"
    b"MAIL FROM:<>\r\nRCPT TO:<alice@sub.example.org>\r\nDATA\r\nSubject: two\r\n\r\nx\r\n.\r\n"
    b"AUTH LOGIN\r\n" + b64(USER.encode()) + b"\r\n" + b64(PASSWORD.encode()) + b"\r\n"
    b"RSET\r\nNOOP\r\nVRFY u\r\nETRN example.com\r\n"
)


@st.composite
def mutated_sessions(draw: Any) -> list[tuple[str, Any]]:
    data = bytearray(VALID_SESSION)
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "duplicate", "crlf", "nul"]))
        pos = draw(st.integers(0, len(data)))
        if op == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.one_of(garbage, line, huge_argument))
        elif op == "delete":
            del data[pos : pos + draw(st.integers(1, 40))]
        elif op == "duplicate":
            data[pos:pos] = data[pos : pos + draw(st.integers(1, 200))]
        elif op == "crlf":
            data[pos:pos] = draw(st.sampled_from([b"\r", b"\n", b"\r\n", b"\r\n.\r\n", b"\n.\n"]))
        elif op == "nul":
            data[pos:pos] = b"\x00"
    return draw(packets_and_events(bytes(data)))


client_ip = st.sampled_from(["127.0.0.9", "127.0.0.1"])


# -- the properties ------------------------------------------------------------------------
@SETTINGS
@given(events=command_streams(), ip=client_ip)
@example(events=[("data", b"BDAT 10 LAST")], ip="127.0.0.9")  # the finishing CRLF starts it
@example(events=[("data", b"AUTH PLAIN\r\n" + b"\x00" * 5 + b"\r\n")], ip="127.0.0.9")
@example(
    events=[("data", b"EHLO c\r\nSTARTTLS\r\nEHLO c\r\nAUTH PLAIN " + GOOD_PLAIN + b"\r\n"),
            ("pause", None), ("data", b"MAIL FROM:<>\r\nRCPT TO:<x@elsewhere.test>\r\n"),
            ("data", b"DATA\r\nSubject: x\r\n\r\nb\r\n.\r\nQUIT\r\n")],
    ip="127.0.0.9",
)  # fmt: skip
def test_random_command_streams(events: list[tuple[str, Any]], ip: str, failures: Any) -> None:
    run_session(events, ip, failures)


@SETTINGS
@given(events=mutated_sessions(), ip=client_ip)
# found by Hypothesis in CI: the client stops reading, then stays idle past the timeout
@example(events=[("data", b"EHLO c\r\nNOOP\r\n"), ("pause", None), ("tick", 300)], ip="127.0.0.9")
def test_mutated_valid_sessions(events: list[tuple[str, Any]], ip: str, failures: Any) -> None:
    run_session(events, ip, failures)


@settings(SETTINGS, max_examples=max(SETTINGS.max_examples // 2, 10))
@given(
    events=st.binary(min_size=1, max_size=3000).flatmap(packets_and_events)
    | st.builds(
        lambda blob, n: [("data", blob * n)],
        st.binary(min_size=1, max_size=64),
        st.integers(1, 4000),
    ),
    ip=client_ip,
)
def test_random_bytes(events: list[tuple[str, Any]], ip: str, failures: Any) -> None:
    run_session(events, ip, failures)


@settings(SETTINGS, max_examples=max(SETTINGS.max_examples // 4, 10))
@given(
    prefix=st.sampled_from([b"", b"EHLO c\r\nMAIL FROM:<>\r\nRCPT TO:<u@example.com>\r\nDATA\r\n"]),
    body=st.lists(st.sampled_from([b"x" * 997, b"\r\n", b".", b"\r", b"\n", b"\x00", b"y" * 5000]),
                  max_size=200).map(b"".join),
    ip=client_ip,
)  # fmt: skip
def test_huge_lines_and_bodies(prefix: bytes, body: bytes, ip: str, failures: Any) -> None:
    """Long runs without CRLF, in command and in DATA mode, in packets of 64 KiB."""
    run_session([("data", prefix + body)], ip, failures)


# -- reply text (RFC 5321 4.2: textstring = 1*(%d09 / %d32-126)) -------------------------------
TEXTSTRING = re.compile(rb"[\t\x20-\x7e]*")
ECHOING = [b"HELO", b"EHLO", b"ETRN", b"VRFY", b"MAIL FROM:", b"RCPT TO:", b"AUTH", b"NOOP"]


@SETTINGS
@given(
    verb=st.sampled_from(ECHOING),
    argument=st.binary(max_size=40).map(lambda b: b.replace(b"\r", b"").replace(b"\n", b"")),
    ip=client_ip,
)
@example(verb=b"ETRN", argument=b"\x1b[2J\x1b[31mowned\x07", ip="127.0.0.9")
def test_reply_text_is_a_textstring(verb: bytes, argument: bytes, ip: str, failures: Any) -> None:
    """Whatever a client sends is never echoed back with control characters (terminal escape
    sequences, DEL, NUL) in a reply: replies carry only HT and printable US-ASCII."""
    root = Path(tempfile.mkdtemp(prefix="mxfuzz-", dir=_TMP_DIR))
    try:
        s = Session(root, ip)
        s.deliver(
            b"EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\n" if verb.startswith(b"RCPT") else b""
        )
        s.deliver(verb + b" " + argument + b"\r\n")
        s.settle()
        for reply_line in s.transport.value().split(b"\r\n"):
            assert TEXTSTRING.fullmatch(reply_line), (verb, argument, reply_line)
        s.finish()
    finally:
        shutil.rmtree(root, ignore_errors=True)
