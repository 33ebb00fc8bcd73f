"""Faults, against the real twistd: a full disk, a primary that comes and goes, and clients
that abuse the server's resources (many idle connections, one that never reads its replies,
one that trickles bytes).

Nothing here waits for time to pass, except where the fault is time itself (a primary that
stalls past our reply timeout, a client that stays idle past ours): those timeouts are set to
one second, and the tests wait for their effect, not for a fixed delay."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from helpers import ROOT, Twistd, base_config, spool_files, write_config

# -- helpers ----------------------------------------------------------------------------------


def wait_for(predicate: Any, timeout: float, what: str) -> None:
    """Poll for an effect produced by another process (not a sleep for time to pass)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def queue_list(server: Twistd) -> list[dict[str, Any]]:
    out = subprocess.run(
        [sys.executable, "-m", "mxbackup.ops.cli", "queue", "list", "--json"]
        + ["--config", str(server.config_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def reply(f: Any) -> tuple[int, str]:
    """One (possibly multi-line) reply from a socket file."""
    text = []
    while True:
        line = f.readline()
        if not line:
            return 0, "connection closed"
        text.append(line.decode().rstrip("\r\n"))
        if line[3:4] != b"-":
            return int(line[:3]), "\n".join(text)


class Raw:
    """A bare SMTP client on a socket: sends bytes, reads replies."""

    def __init__(self, port: int, ip: str = "127.0.0.1") -> None:
        address = ("127.0.0.1", port)
        self.sock = socket.create_connection(address, timeout=20, source_address=(ip, 0))
        self.file = self.sock.makefile("rb")
        self.greeting = reply(self.file)

    def cmd(self, line: bytes) -> tuple[int, str]:
        self.sock.sendall(line + b"\r\n")
        return reply(self.file)

    def send_message(self, rcpt: str, body: bytes) -> tuple[int, str]:
        for line in (b"EHLO c.test", b"MAIL FROM:<s@sender.test>", f"RCPT TO:<{rcpt}>".encode()):
            code, text = self.cmd(line)
            if code >= 400:
                return code, text
        code, text = self.cmd(b"DATA")
        if code != 354:
            return code, text
        self.sock.sendall(body + b"\r\n.\r\n")
        return reply(self.file)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


# -- disk full --------------------------------------------------------------------------------


@contextmanager
def tmpfs(path: Path, size: str) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs for the spool needs root")
    path.mkdir()
    mount = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if mount.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mount.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def queued_digests(spool: Path) -> dict[str, str]:
    return {
        name: hashlib.sha256((spool / "new" / name).read_bytes()).hexdigest()
        for name in spool_files(spool, "new")
    }


def body(i: int, size: int) -> bytes:
    line = b"x" * 76 + b"\r\n"
    return f"Message-Id: <disk{i}@test>\r\nSubject: {i}\r\n\r\n".encode() + line * (size // 78)


def test_disk_full_answers_4xx_keeps_the_queue_and_recovers(tmp_path: Path) -> None:
    """The spool on a 3 MB tmpfs.  First the free-space reserve (452 4.3.1 at MAIL, before the
    disk is full); then, without a reserve, the disk really fills in the middle of DATA:
    4xx, never 5xx and never 250; what was queued stays byte for byte; when space returns,
    acceptance resumes."""
    with tmpfs(tmp_path / "disk", "3m") as disk:
        data = base_config(tmp_path, spool=str(disk / "spool"), min_free_space=1_000_000)
        data["delivery"] = {"probe_interval": 3600}  # the primary (port 9) stays down
        config = write_config(tmp_path, data)
        server = Twistd(config, tmp_path / "twistd.log").start()
        try:
            spool = disk / "spool"
            accepted: list[str] = []
            codes: list[tuple[int, str]] = []
            for i in range(40):  # 100 KB each: the 2 MB above the reserve fills by ~20
                c = Raw(server.port, "127.0.0.9")
                code, text = c.send_message("u@example.com", body(i, 100_000))
                c.close()
                codes.append((code, text))
                if code == 250:
                    accepted.append(text)
                else:
                    break
            assert accepted, codes
            assert codes[-1][0] == 452 and "4.3.1" in codes[-1][1], codes[-1]
            before = queued_digests(spool)
            assert len(before) == len(accepted)

            # No reserve: fill the disk until less than one message is left, then send one.
            data["server"]["min_free_space"] = 0
            write_config(tmp_path, data)
            assert (
                subprocess.run(
                    [sys.executable, "-m", "mxbackup.ops.cli", "reload", "--config", str(config)],
                    cwd=ROOT,
                    capture_output=True,
                ).returncode
                == 0
            )
            filler = disk / "filler"
            with open(filler, "wb", buffering=0) as f:
                try:
                    while True:
                        f.write(b"\0" * 4096)
                except OSError:
                    pass  # the disk is full
            os.truncate(filler, max(0, filler.stat().st_size - 60_000))
            c = Raw(server.port, "127.0.0.9")
            code, text = c.send_message("u@example.com", body(100, 200_000))
            assert 400 <= code < 500, (code, text)
            assert "4.3." in text, text
            # The session goes on: the next transaction is answered too.
            assert c.cmd(b"RSET")[0] == 250
            c.close()
            assert queued_digests(spool) == before  # nothing queued was damaged
            assert spool_files(spool, "tmp") == []  # nothing half-written stays behind

            filler.unlink()  # space returns
            c = Raw(server.port, "127.0.0.9")
            code, text = c.send_message("u@example.com", body(101, 100_000))
            c.close()
            assert code == 250, text
            assert len(queue_list(server)) == len(accepted) + 1
        finally:
            server.stop()
        # After a restart, every acknowledged message is still there.
        server = Twistd(config, tmp_path / "twistd.log").start()
        try:
            assert len(queue_list(server)) == len(accepted) + 1
        finally:
            server.stop()


# -- a primary that comes and goes ------------------------------------------------------------


class FlappingPrimary:
    """A primary on 127.0.0.1 whose connections misbehave in turn: reset before the greeting
    (as good as down), 421 at the greeting, 421 at MAIL after a few messages, reset in the
    middle of DATA, stall (never answer), or behave.  Records each message it answered 250
    for, by Message-Id."""

    CYCLE = ("reset", "greet421", "ok_then_421", "reset_in_data", "stall", "ok")

    def __init__(self, stalls: int = 2) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self.listener.getsockname()[1]
        self.flapping = False  # until set, every connection is reset (the primary is "down")
        self.lock = threading.Lock()
        self.connections = 0
        self.open = 0
        self.max_open = 0
        self.stalls_left = stalls
        self.delivered: list[str] = []
        self.behaviours: list[str] = []
        self.stopping = False
        self.threads: list[threading.Thread] = []
        self.acceptor = threading.Thread(target=self._accept, daemon=True)
        self.acceptor.start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                sock, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                if not self.flapping:
                    behaviour = "reset"
                else:
                    behaviour = self.CYCLE[self.connections % len(self.CYCLE)]
                    if behaviour == "stall":
                        if self.stalls_left > 0:
                            self.stalls_left -= 1
                        else:
                            behaviour = "ok"
                self.behaviours.append(behaviour)
                self.open += 1
                self.max_open = max(self.max_open, self.open)
            t = threading.Thread(target=self._serve, args=(sock, behaviour), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, sock: socket.socket, behaviour: str) -> None:
        try:
            sock.settimeout(30)
            self._session(sock, behaviour)
        except OSError:
            pass
        finally:
            with self.lock:
                self.open -= 1
            sock.close()

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\0\0\0\0\0\0\0")
        sock.close()

    def _session(self, sock: socket.socket, behaviour: str) -> None:
        if self._misbehave_at_once(sock, behaviour):
            return
        f = sock.makefile("rb")
        sock.sendall(b"220 flapping.test ESMTP\r\n")
        messages = 0
        while True:
            line = f.readline()
            if not line:
                return
            verb = line[:4].upper()
            if verb == b"MAIL" and behaviour == "ok_then_421" and messages >= 5:
                sock.sendall(b"421 4.3.2 too busy, closing\r\n")
                return
            if verb == b"DATA":
                sock.sendall(b"354 go ahead\r\n")
                if not self._data(sock, f, behaviour, messages):
                    return
                messages += 1
                continue
            reply = self.REPLIES.get(verb, b"502 5.5.2 what\r\n")
            sock.sendall(reply)
            if verb == b"QUIT":
                return

    REPLIES = {
        b"EHLO": b"250-flapping.test\r\n250-PIPELINING\r\n250 8BITMIME\r\n",
        b"MAIL": b"250 2.1.0 ok\r\n",
        b"RCPT": b"250 2.1.5 ok\r\n",
        b"RSET": b"250 2.0.0 ok\r\n",
        b"NOOP": b"250 2.0.0 ok\r\n",
        b"QUIT": b"221 2.0.0 bye\r\n",
    }

    def _misbehave_at_once(self, sock: socket.socket, behaviour: str) -> bool:
        """The behaviours that never hold a session: True when one of them ran."""
        if behaviour == "reset":
            self._reset(sock)
        elif behaviour == "greet421":
            sock.sendall(b"421 4.3.2 flapping.test going away\r\n")
        elif behaviour == "stall":
            while not self.stopping and sock.recv(4096):  # never answers; ends when we give up
                pass
        else:
            return False
        return True

    def _data(self, sock: socket.socket, f: Any, behaviour: str, messages: int) -> bool:
        """Read one message up to the dot and record it; False when the session ended."""
        message = []
        while True:
            data_line = f.readline()
            if not data_line:
                return False
            if behaviour == "reset_in_data" and messages >= 1 and len(message) > 3:
                self._reset(sock)
                return False
            if data_line == b".\r\n":
                break
            message.append(data_line)
        mid = next(
            (m.split(b":", 1)[1].strip().decode() for m in message
             if m.lower().startswith(b"message-id:")),
            "?",
        )  # fmt: skip
        with self.lock:
            self.delivered.append(mid)
        sock.sendall(b"250 2.0.0 ok\r\n")
        return True

    def stop(self) -> None:
        self.stopping = True
        self.listener.close()


def test_flapping_primary_drains_1000_messages(tmp_path: Path) -> None:
    """1,000 messages queued while the primary is down, then it comes and goes: every
    message arrives exactly once, none bounces, nothing stays queued, and neither the
    connections nor the memory grow without bound."""
    primary = FlappingPrimary()
    try:
        data = base_config(tmp_path)
        for route in data["routes"]:
            route.update(port=primary.port, retries=1000, minutes_between_retries=60)
        data["delivery"] = {
            "probe_interval": 0.2,
            "reply_timeout": 1,
            "connect_timeout": 1,
            "max_connections_per_target": 5,
            "max_messages_per_connection": 50,
        }
        server = Twistd(write_config(tmp_path, data), tmp_path / "twistd.log").start()
        try:
            n, clients = 1000, 8
            errors: list[str] = []

            def submit(k: int) -> None:
                try:
                    with server.smtp(f"127.0.0.{10 + k}") as c:
                        for i in range(k, n, clients):
                            c.sendmail(
                                "s@sender.test",
                                [f"u{i % 7}@example.com"],
                                f"Message-Id: <flap{i}@test>\r\nSubject: {i}\r\n\r\nbody {i}\r\n",
                            )
                except Exception as e:  # noqa: BLE001 - reported below
                    errors.append(repr(e))

            workers = [threading.Thread(target=submit, args=(k,)) for k in range(clients)]
            for w in workers:
                w.start()
            for w in workers:
                w.join()
            assert not errors, errors
            rss_before = rss_kib(server.proc.pid)

            primary.flapping = True  # it comes back, badly
            try:
                wait_for(lambda: len(set(primary.delivered)) >= n, 120, "every message delivered")
            except AssertionError:
                log = server.logtext().splitlines()
                raise AssertionError(
                    f"{len(set(primary.delivered))} of {n} delivered; connections:"
                    f" {Counter(primary.behaviours)}; log tail: " + "\n".join(log[-30:])
                ) from None
            wait_for(lambda: queue_list(server) == [], 30, "an empty queue")

            assert sorted(primary.delivered) == sorted(f"<flap{i}@test>" for i in range(n))
            seen = set(primary.behaviours)
            assert {"reset", "greet421", "ok_then_421", "reset_in_data", "stall"} <= seen, seen
            assert primary.max_open <= 5 + 1  # the target's limit (+ one probe)
            log = server.logtext()
            assert "outcome=bounced" not in log and "from=<>" not in log
            assert spool_files(tmp_path / "spool", "new") == []
            # Memory: the queue emptied; a leak per connection or message would show here.
            assert rss_kib(server.proc.pid) < rss_before + 30_000
        finally:
            server.stop()
    finally:
        primary.stop()


# -- resource abuse ---------------------------------------------------------------------------


@pytest.fixture
def limited(tmp_path: Path) -> Iterator[Twistd]:
    data = base_config(tmp_path, max_connections=12, max_connections_per_ip=4, idle_timeout=1)
    data["delivery"] = {"probe_interval": 3600}
    server = Twistd(write_config(tmp_path, data), tmp_path / "twistd.log").start()
    yield server
    server.stop()


def test_idle_connections_hit_the_limits_and_time_out(limited: Twistd) -> None:
    idle = [Raw(limited.port, "127.0.0.20") for _ in range(4)]
    assert all(c.greeting[0] == 220 for c in idle)
    fifth = Raw(limited.port, "127.0.0.20")
    assert fifth.greeting[0] == 421 and "4.7.0" in fifth.greeting[1], fifth.greeting
    assert fifth.file.read() == b""  # and closed
    # Other addresses are still served, up to the total.
    more = [Raw(limited.port, f"127.0.0.{30 + i}") for i in range(8)]
    assert all(c.greeting[0] == 220 for c in more)
    over = Raw(limited.port, "127.0.0.50")
    assert over.greeting[0] == 421 and "4.7.0" in over.greeting[1]
    # Idle past idle_timeout: each gets 421 4.4.2 and is closed, freeing its slot.
    for c in idle + more:
        code, text = reply(c.file)
        assert code == 421 and "4.4.2" in text, text
        assert c.file.read() == b""
    wait_for(lambda: Raw(limited.port, "127.0.0.20").greeting[0] == 220, 10, "a free slot")
    client = Raw(limited.port, "127.0.0.51")
    assert client.send_message("u@example.com", b"Subject: x\r\n\r\nok")[0] == 250
    client.close()


def test_client_that_never_reads_replies_is_bounded(limited: Twistd) -> None:
    """A client pipelines megabytes of commands and never reads: the server stops reading
    from it (bounded memory), keeps serving others, and closes it at the idle timeout."""
    hog = socket.create_connection(("127.0.0.1", limited.port), source_address=("127.0.0.21", 0))
    hog.setblocking(False)
    rss_before = rss_kib(limited.proc.pid)
    sent = 0
    chunk = b"NOOP\r\n" * 10_000
    deadline = time.monotonic() + 10
    while sent < 50_000_000 and time.monotonic() < deadline:
        try:
            sent += hog.send(chunk)
        except BlockingIOError:
            break  # the server stopped reading: the socket buffers are full
    assert sent < 50_000_000, "the server read 50 MB of pipelined commands without replying"
    client = Raw(limited.port, "127.0.0.22")
    assert client.send_message("u@example.com", b"Subject: x\r\n\r\nok")[0] == 250
    client.close()
    assert rss_kib(limited.proc.pid) < rss_before + 20_000
    # Not reading is being idle: the timeout fires although the client "sent" a lot.
    wait_for(lambda: "idle timeout client=127.0.0.21" in limited.logtext(), 20, "the timeout")
    hog.setblocking(True)
    hog.settimeout(30)
    replies = 0
    while True:
        try:
            data = hog.recv(1 << 20)
        except ConnectionResetError:
            break
        if not data:
            break
        replies += data.count(b"\r\n")
    hog.close()
    assert replies < sent // len(b"NOOP\r\n")  # it was dropped, not answered for everything


def test_trickling_client_is_cut_at_the_idle_timeout(limited: Twistd) -> None:
    """One byte at a time, never completing a line: the idle timeout counts from the last
    complete line, so trickling does not hold a connection slot forever."""
    c = Raw(limited.port, "127.0.0.23")
    started = time.monotonic()
    closed = False
    while time.monotonic() - started < 10:
        try:
            c.sock.sendall(b"N")
        except OSError:
            closed = True
            break
        c.sock.settimeout(0.3)  # the pace of the trickle: one byte every 0.3 s
        try:
            data = c.sock.recv(4096)
        except TimeoutError:
            continue
        assert data.startswith(b"421 4.4.2"), data
        closed = True
        break
    assert closed, "a trickling client kept its connection for 10 s past a 1 s idle timeout"
    c.close()
    other = Raw(limited.port, "127.0.0.24")
    assert other.cmd(b"NOOP")[0] == 250
    other.close()


def test_slow_but_steady_client_is_served(limited: Twistd) -> None:
    """Slow is not idle: a client that completes each line within the timeout is served."""
    c = Raw(limited.port, "127.0.0.25")
    for _ in range(3):  # 1.8 s in all, each line within 0.6 s: longer than the idle timeout
        for byte in b"NOOP\r\n":
            c.sock.sendall(bytes([byte]))
            time.sleep(0.1)  # the pace of a slow client: the behaviour under test
        assert reply(c.file)[0] == 250
    c.close()
