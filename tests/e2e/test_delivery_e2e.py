"""Outbound end to end: the real twistd hands queued mail to Postfix's smtp-sink as the primary.

The primary is down when the mail arrives; once it is up the mail must arrive intact within
seconds (the probe), not at the next retry interval (15 minutes).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest

from helpers import Twistd, base_config, spool_files, write_config

SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
pytestmark = pytest.mark.skipif(
    not os.path.exists(SINK),
    reason="Postfix's smtp-sink is not installed (apt-get install postfix)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def start_sink(directory: Path, port: int) -> subprocess.Popen:
    directory.mkdir(exist_ok=True)
    user = ["-u", "root"] if os.geteuid() == 0 else []
    return subprocess.Popen(
        [SINK, "-d", f"{directory}/%M.", *user, f"127.0.0.1:{port}", "100"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def wait_for(predicate, timeout: float = 20.0) -> bool:
    """Poll for an outcome produced by other processes (not a sleep for time to pass)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def body_with_dots_at_chunk_boundaries() -> bytes:
    lines = [b"Subject: dots", b"Message-Id: <dots@e2e.test>", b""]
    size = sum(len(x) + 2 for x in lines)
    filler = b"x" * 70
    while size < 40000:
        lines.append(filler)
        size += len(filler) + 2
        if size % 16384 > 16300:  # get a dot line close to each 16 KiB boundary
            lines.append(b".leading dot " + str(size).encode())
            size += 20
    lines += [b".", b"..", b". end"]
    return b"\r\n".join(lines) + b"\r\n"


class DeadPrimary:
    """The real twistd with example.com routed to a primary whose port is closed until
    ``start_primary`` runs smtp-sink there."""

    def __init__(self, tmp_path: Path, delivery: dict | None) -> None:
        self.tmp = tmp_path
        self.port = free_port()
        data = base_config(tmp_path)
        data["routes"][0].update({"target_host": "127.0.0.1", "port": self.port})
        if delivery is not None:
            data["delivery"] = delivery
        self.server = Twistd(write_config(tmp_path, data), tmp_path / "twistd.log").start()
        self.sink: subprocess.Popen | None = None

    def start_primary(self) -> None:
        self.sink = start_sink(self.tmp / "sink", self.port)

    def close(self) -> None:
        self.server.stop()
        if self.sink:
            self.sink.kill()
            self.sink.wait()


@pytest.fixture
def dead_primary(tmp_path):
    made: list[DeadPrimary] = []

    def make(delivery: dict | None = None) -> DeadPrimary:
        made.append(DeadPrimary(tmp_path, delivery))
        return made[-1]

    yield make
    for world in made:
        world.close()


def test_queued_while_primary_down_arrives_intact_when_it_returns(tmp_path, dead_primary):
    world = dead_primary({"probe_interval": 0.5, "tick": 0.1})
    server = world.server
    body = body_with_dots_at_chunk_boundaries()
    with server.smtp("127.0.0.9") as c:
        c.sendmail("s@sender.test", ["u@example.com"], body)
    spool = tmp_path / "spool"
    assert len(spool_files(spool, "new")) == 1
    assert wait_for(lambda: "target example.com is down" in server.logtext())
    up_at = time.monotonic()
    world.start_primary()
    assert wait_for(lambda: spool_files(tmp_path / "sink", "") != []), server.logtext()
    elapsed = time.monotonic() - up_at
    assert elapsed < 5, f"took {elapsed:.1f}s after the primary came up"
    # The dump file appears as the message arrives; it is complete once the sink has
    # answered the end of data, i.e. once we logged the delivery.
    assert wait_for(lambda: "outcome=delivered" in server.logtext()), server.logtext()
    (dump,) = (tmp_path / "sink").iterdir()
    received = dump.read_bytes()
    # smtp-sink writes LF line ends and one extra LF at the end; after its headers and our
    # Received header come exactly the bytes that were sent.
    ours = received.index(b"by mx2.example.net (mxbackup)")
    after_ours = received[received.index(b"\nSubject: dots", ours) + 1 :]
    assert after_ours == body.replace(b"\r\n", b"\n") + b"\n"
    assert received.count(b"Message-Id: <dots@e2e.test>") == 1
    # The spool process unlinks the envelope, then the message (a message left without its
    # envelope by a crash between the two is removed at start-up): wait for both.
    assert wait_for(lambda: spool_files(spool, "env") == [] and spool_files(spool, "new") == [])
    assert "outcome=delivered reply=250" in server.logtext()


def test_with_the_default_settings_mail_arrives_within_seconds_of_the_primary_starting(
    tmp_path, dead_primary
):
    """No delivery section at all (probe_interval 30, tick 1, quick checks every 2 s): the
    quick connect-only checks notice the primary's port open and probe it at once, so the
    mail does not wait for the 30 s probe.  A behaviour bound, not a benchmark."""
    world = dead_primary()  # no delivery section
    server = world.server
    with server.smtp("127.0.0.9") as c:
        c.sendmail("s@sender.test", ["u@example.com"], b"Subject: quick\r\n\r\nhello\r\n")
    assert wait_for(lambda: "target example.com is down" in server.logtext())
    up_at = time.monotonic()
    world.start_primary()
    assert wait_for(lambda: spool_files(tmp_path / "sink", "") != [], 15), server.logtext()
    elapsed = time.monotonic() - up_at
    assert elapsed < 10, f"took {elapsed:.1f}s after the primary started"
    assert wait_for(lambda: "outcome=delivered reply=250" in server.logtext())
    assert wait_for(lambda: spool_files(tmp_path / "spool", "env") == [])
    # the checks say nothing: the log has the one "is down" and the one "is back"
    assert server.logtext().count("target example.com is down") == 1
    assert server.logtext().count("target example.com is back") == 1


def test_a_connection_from_the_primary_is_a_sign_of_life(tmp_path, dead_primary):
    """Probes once an hour, no quick checks: the primary connecting to us (it is back and
    sends mail) has it probed at once, and the queued mail follows."""
    world = dead_primary({"quick_check_interval": 0, "probe_interval": 3600})
    server, port = world.server, world.port
    with server.smtp("127.0.0.9") as c:
        c.sendmail("s@sender.test", ["u@example.com"], b"Subject: life\r\n\r\nhello\r\n")
    assert wait_for(lambda: "target example.com is down" in server.logtext())
    world.start_primary()
    assert wait_for(lambda: listening(port))  # else the probe could come too early
    with server.smtp("127.0.0.1") as c:  # from the primary's address: just a NOOP
        c.noop()
    up_at = time.monotonic()
    assert wait_for(lambda: spool_files(tmp_path / "sink", "") != [], 15), server.logtext()
    elapsed = time.monotonic() - up_at
    assert elapsed < 10, f"took {elapsed:.1f}s after the primary connected"
