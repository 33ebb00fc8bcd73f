"""The prefetch process in the real server: started with it, quiet at a stop where systemd
signals every process of the service, gone with a killed server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from helpers import (
    Twistd,
    base_config,
    children_of,
    free_port,
    process_gone,
    start_smtp_sink,
    write_config,
)
from mxbackup.queue import prefetch

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux") or not prefetch.supported(),
    reason="the prefetch process needs Linux (posix_fadvise, PR_SET_PDEATHSIG)",
)
CHILD = b"mxbackup.queue.prefetchchild"


def the_child(server: Twistd) -> int:
    """The server's prefetch process, polled for while the reactor starts it."""
    assert server.proc is not None
    deadline = time.monotonic() + 20
    while not (children := children_of(server.proc.pid, CHILD)):
        assert time.monotonic() < deadline, server.logtext()[-2000:]
        time.sleep(0.02)  # polling for the child, not waiting for time to pass
    (child,) = children
    return child


@pytest.fixture
def delivering(tmp_path: Path) -> Iterator[tuple[Twistd, subprocess.Popen[bytes]]]:
    primary = free_port()
    data = base_config(tmp_path)
    data["routes"][0]["port"] = primary
    sink = start_smtp_sink(primary, tmp_path / "dump")
    server = Twistd(write_config(tmp_path, data), tmp_path / "twistd.log")
    try:
        server.start()
        yield server, sink
    finally:
        server.stop()
        sink.kill()
        sink.wait()


def test_it_runs_from_the_start_and_a_stop_signalled_to_every_process_is_quiet(
    delivering: tuple[Twistd, subprocess.Popen[bytes]],
) -> None:
    """Started as the reactor runs (before any mail); systemd's stop sends SIGTERM to every
    process of the service: the prefetch process ignores it and ends when the server closes
    its input, and nothing is logged as a failure."""
    server, _ = delivering
    server.wait_ready()
    child = the_child(server)  # no mail sent yet
    with server.smtp() as c:
        c.sendmail("s@sender.test", ["u@example.com"], b"Subject: x\r\n\r\nbody\r\n")
    assert children_of(server.proc.pid, CHILD) == [child]  # type: ignore[union-attr]
    os.kill(child, signal.SIGTERM)
    server.stop()  # (twistd's exit status then is the signal's)
    assert process_gone(child)
    assert "prefetch process ended" not in server.logtext()


def test_the_prefetch_process_dies_with_a_killed_server(
    delivering: tuple[Twistd, subprocess.Popen[bytes]],
) -> None:
    server, _ = delivering
    child = the_child(server)
    server.kill9()
    assert process_gone(child)
