"""Shared test helpers: configs, a real twistd subprocess, an in-memory protocol harness."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import signal
import smtplib
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from twisted.conch.ssh import keys
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import ITLSTransport
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from zope.interface import implementer

from mxbackup import config as config_module
from mxbackup.inbound.factory import SMTPFactory
from mxbackup.listening import Listener
from mxbackup.queue.envelope import Envelope, Recipient, new_queue_id
from mxbackup.queue.spool import Spool

ROOT = Path(__file__).resolve().parent.parent
TWISTD = [sys.executable, "-c", "from twisted.scripts.twistd import run; run()"]
_PORT_LINE = re.compile(rb"SMTPFactory starting on (\d+)")
_READY_LINE = re.compile(rb"mxbackup ready")


def base_config(tmp: Path, **server: Any) -> dict[str, Any]:
    """A configuration like etc/mx.yaml, listening on an ephemeral loopback port."""
    return {
        "server": {
            "hostname": "mx2.example.net",
            "listen": ["tcp:0:interface=127.0.0.1"],
            "spool": str(tmp / "spool"),
            "min_free_space": 0,
            **server,
        },
        "routes": [
            {"domain": "example.com", "target_host": "127.0.0.1", "port": 9},
            {
                "domain": "*.example.org",
                "target_host": "127.0.0.1",
                "port": 9,
                "addresses": ["alice@sub.example.org", "Bob@Sub.Example.org"],
            },
        ],
    }


def write_config(tmp: Path, data: dict[str, Any], name: str = "mx.yaml") -> Path:
    path = tmp / name
    path.write_text(yaml.safe_dump(data))
    return path


class Twistd:
    """The real product: ``twistd -n mxbackup --config FILE`` in a subprocess."""

    def __init__(self, config_path: Path, log_path: Path) -> None:
        self.config_path = config_path
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self._start_offset = 0

    def start(self, timeout: float = 20.0) -> Twistd:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.log = open(self.log_path, "ab")  # noqa: SIM115
        start_offset = self.log.tell()
        self.proc = subprocess.Popen(
            [*TWISTD, "--nodaemon", "--pidfile=", "mxbackup", "--config", str(self.config_path)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            cwd=str(self.config_path.parent),
            env=env,
        )
        self._start_offset = start_offset
        m = self._wait_for(_PORT_LINE, timeout, "twistd did not start listening")
        self.port = int(m.group(1))
        return self

    def wait_ready(self, timeout: float = 20.0) -> bytes:
        """This start's log once it says "mxbackup ready": every listener is bound (the SMTP
        port's line, which ``start`` waits for, may come before the manhole's or metrics')."""
        return self._wait_for(_READY_LINE, timeout, "twistd did not log 'mxbackup ready'").string

    def _wait_for(self, line: re.Pattern[bytes], timeout: float, failed: str) -> re.Match[bytes]:
        """Poll this start's log for ``line``; RuntimeError if twistd exits or time runs out."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = self.log_path.read_bytes()[self._start_offset :]
            m = line.search(data)
            if m:
                return m
            if self.proc.poll() is not None:
                raise RuntimeError(f"twistd exited {self.proc.returncode}: {data.decode()}")
            time.sleep(0.05)  # polling for start-up, not waiting for time to pass
        raise RuntimeError(failed)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait()
        self.log.close()

    def logtext(self) -> str:
        return self.log_path.read_text(errors="replace")

    def smtp(self, source_ip: str = "127.0.0.1", **kw: Any) -> smtplib.SMTP:
        return smtplib.SMTP("127.0.0.1", self.port, source_address=(source_ip, 0), timeout=10, **kw)


class SpoolServer:
    """A running twistd and its spool, for tests that look at what it queued."""

    def __init__(self, twistd: Twistd, spool: Path) -> None:
        self.twistd = twistd
        self.spool = spool
        self.port = twistd.port

    def new(self) -> list[str]:
        return spool_files(self.spool, "new")

    def envs(self) -> list[str]:
        return spool_files(self.spool, "env")

    def envelope(self, queue_id: str) -> dict[str, Any]:
        return json.loads((self.spool / "env" / queue_id).read_bytes())

    def recipients(self, queue_id: str) -> list[str]:
        return [r["address"] for r in self.envelope(queue_id)["recipients"]]

    def log(self) -> str:
        return self.twistd.logtext()


def serve(tmp: Path, data: dict[str, Any], kind: type[SpoolServer] = SpoolServer) -> Any:
    """Start twistd on ``data`` (a generator for a fixture: yields the server, then stops it)."""
    twistd = Twistd(write_config(tmp, data), tmp / "twistd.log").start()
    try:
        yield kind(twistd, tmp / "spool")
    finally:
        twistd.stop()


def free_port() -> int:
    """A loopback port nothing listens on (yet)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def smtp_sink_bin() -> str:
    """Postfix's smtp-sink; the test is skipped where it is not installed."""
    import pytest

    path = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
    if not os.path.exists(path):
        pytest.skip("Postfix's smtp-sink is not installed (apt-get install postfix)")
    return path


def start_smtp_sink(port: int, dump: Path) -> subprocess.Popen[bytes]:
    """smtp-sink as a primary on 127.0.0.1:``port``, each message it takes a file in
    ``dump`` (made here); the caller kills it."""
    dump.mkdir()
    user = ["-u", "root"] if os.geteuid() == 0 else []  # it refuses root otherwise
    return subprocess.Popen(
        [smtp_sink_bin(), "-d", f"{dump}/%M.", *user, f"127.0.0.1:{port}", "200"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def children_of(pid: int, cmdline: bytes = b"") -> list[int]:
    """The processes whose parent is ``pid`` (and whose command line holds ``cmdline``)."""
    found = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            line = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid and cmdline in line:
            found.append(int(entry))
    return found


def process_gone(pid: int, limit: float = 10.0) -> bool:
    """Whether ``pid`` ends (or is a zombie) within ``limit`` seconds: polls at the kernel's
    pace, not waiting for time to pass."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z":
                return True  # dead, a zombie until its parent or init reaps it
        except FileNotFoundError:
            return True
        time.sleep(0.02)
    return False


def spool_files(spool: Path, sub: str) -> list[str]:
    d = spool / sub
    return sorted(os.listdir(d)) if d.exists() else []


# -- in-memory protocol harness -------------------------------------------------------------
def one_recipient_envelope(qid: str, size: int = 5) -> Envelope:
    """A queued message's envelope, as the spool tests need one."""
    return Envelope(
        id=qid,
        sender="s@sender.test",
        recipients=[Recipient("u@example.com", "example.com")],
        received_at=1.0,
        size=size,
    )


def sync_thread(fn: Any, *args: Any) -> defer.Deferred:
    return defer.maybeDeferred(fn, *args)


def committed(root: Path, count: int) -> list[str]:
    """A spool at ``root`` with ``count`` messages committed (a round each, the checkpoint
    set), as the server leaves them; their ids."""
    spool = Spool(str(root), sync_thread)
    spool.recover()
    ids = []
    for _ in range(count):
        inc = spool.incoming()
        inc.write(b"a message\r\n")
        assert spool.commit(inc, one_recipient_envelope(inc.id, inc.size)).called
        ids.append(inc.id)
    return ids


class Harness:
    """One ``SMTPServer`` on a ``StringTransport`` with an injected ``Clock``."""

    def __init__(
        self,
        tmp: Path,
        data: dict[str, Any] | None = None,
        client_ip: str = "127.0.0.9",
        runner: Any = sync_thread,
        check_password: Any = None,
        tls_context: Any = None,
    ) -> None:
        self.clock = Clock()
        self.config = config_module.parse(data or base_config(tmp), "test.yaml")
        self.spool = Spool(self.config.server.spool, runner, clock=self.clock.seconds)
        self.spool.recover()
        self.woken: list[Any] = []
        self.factory = SMTPFactory(
            self.config,
            self.spool,
            clock=self.clock,
            check_password=check_password or (lambda u, p: defer.succeed(False)),
            tls_context=tls_context,
            wakeup=self.woken.append,
        )
        self.client_ip = client_ip

    def connect(self, client_ip: str | None = None) -> Conn:
        ip = client_ip or self.client_ip
        addr = IPv4Address("TCP", ip, 40000)
        proto = self.factory.buildProtocol(addr)
        transport = StringTransport(
            hostAddress=IPv4Address("TCP", "127.0.0.1", 25), peerAddress=addr
        )
        proto.makeConnection(transport)
        return Conn(proto, transport)

    def connect_tls(self, client_ip: str = "127.0.0.9") -> Conn:
        """A connection whose transport can start TLS (it only records that it did)."""
        addr = IPv4Address("TCP", client_ip, 40000)
        proto = self.factory.buildProtocol(addr)
        transport = TLSStringTransport(peerAddress=addr)
        proto.makeConnection(transport)
        return Conn(proto, transport)


@implementer(ITLSTransport)
class TLSStringTransport(StringTransport):
    tls_started = False

    def startTLS(self, ctx: Any, normal: bool = True) -> None:
        self.tls_started = True


class Conn:
    def __init__(self, proto: Any, transport: StringTransport) -> None:
        self.proto = proto
        self.transport = transport

    def send(self, data: bytes) -> list[str]:
        """Send raw bytes; return the reply lines produced since the last call."""
        self.transport.clear()
        self.proto.dataReceived(data)
        return self.read()

    def read(self) -> list[str]:
        out = self.transport.value().decode("utf-8", "replace")
        self.transport.clear()
        return [line for line in out.split("\r\n") if line]

    def codes(self, data: bytes) -> list[int]:
        return [int(line[:3]) for line in self.send(data) if line[3:4] == " "]


# -- listeners and keys shared by the manhole, metrics and monitoring tests ---------------
def track_connections(factory: Any) -> list[defer.Deferred[None]]:
    """A Deferred per server-side connection, fired when it is gone (trial wants a clean
    reactor at the end of each test)."""
    lost: list[defer.Deferred[None]] = []
    build = factory.buildProtocol

    def build_and_track(addr: Any) -> Any:
        protocol = build(addr)
        done: defer.Deferred[None] = defer.Deferred()
        lost.append(done)
        connection_lost = protocol.connectionLost

        def connectionLost(reason: Any) -> None:
            connection_lost(reason)
            done.callback(None)

        protocol.connectionLost = connectionLost
        return protocol

    factory.buildProtocol = build_and_track
    return lost


def listening_port(svc: Any) -> defer.Deferred[Any]:
    """The port a ``strports`` service will listen on; call before starting it.  Its public
    ``endpoint`` is wrapped (``mxbackup.listening.Listener``), so the service still gets (and
    later stops) the port itself."""
    d: defer.Deferred[Any] = defer.Deferred()
    svc.endpoint = Listener(svc.endpoint, "test", on_bound=d.callback)
    return d


def make_client_key(directory: Path, name: str) -> tuple[Path, str]:
    """An ed25519 key pair: the private key file (0600, as ssh insists) and the public line."""
    private = ed25519.Ed25519PrivateKey.generate()
    path = directory / name
    path.write_bytes(
        private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)
    public = keys.Key(private).public().toString("OPENSSH").decode("ascii")
    return path, f"{public} {name}@test"


def sample_envelope(qid: str = "q1", received_at: float = 0.0, **more: object) -> Any:
    """An envelope with recipients at two targets: two pending at a route (next attempts 500
    and 300), one delivered and one interrupted by a crash (in flight on disk) by MX."""
    return Envelope(
        id=qid,
        sender="s@sender.test",
        recipients=[
            Recipient("a@example.com", "example.com", next_attempt=500.0),
            Recipient("b@example.com", "example.com", next_attempt=300.0),
            Recipient("c@other.test", None, state="delivered"),
            Recipient("d@other.test", None, next_attempt=700.0, inflight=True),
        ],
        received_at=received_at,
        size=1,
        **more,  # type: ignore[arg-type]
    )


def spool_frame(obj: Any) -> bytes:
    """``obj`` as one frame of the spool process's pipe (``queue.rounds.FRAME``)."""
    from mxbackup.queue.rounds import FRAME

    payload = pickle.dumps(obj)
    return FRAME.pack(len(payload)) + payload


def spool_replies(data: bytes) -> list[Any]:
    """The frames the spool process wrote, unpickled."""
    from mxbackup.queue.rounds import FRAME

    out = []
    while data:
        (size,) = FRAME.unpack_from(data)
        out.append(pickle.loads(data[FRAME.size : FRAME.size + size]))
        data = data[FRAME.size + size :]
    return out


def queue_waiting(spool: Path, count: int) -> list[str]:  # each message's Subject is its queue id
    """``count`` messages waiting for a primary that is down (next try in an hour): written
    an hour ago (an envelope written since the checkpoint is read from its file)."""
    for sub in ("new", "env", "tmp", "cur", "corrupt"):
        (spool / sub).mkdir(parents=True, exist_ok=True)
    now, qids = time.time(), []
    for i in range(count):
        qid = new_queue_id(now + i / 1e6)  # one per µs: ids that cannot collide
        rcpt = Recipient("u@example.com", "example.com", next_attempt=now + 3600)
        env = Envelope(id=qid, sender="s@sender.test", recipients=[rcpt], received_at=now, size=7)
        (spool / "new" / qid).write_bytes(b"Subject: %s\r\n\r\nhello\r\n" % qid.encode())
        (spool / "env" / qid).write_bytes(env.to_json())
        os.utime(spool / "env" / qid, (now - 3600, now - 3600))  # queued for an hour
        qids.append(qid)
    return qids
