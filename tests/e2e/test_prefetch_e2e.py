"""The prefetch process in the real server: started with it, quiet at a stop where
systemd signals every process of the service, gone with a killed server."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from helpers import (
    Twistd,
    base_config,
    children_of,
    free_port,
    process_gone,
    start_smtp_sink,
    write_config,
)

CHILD = b"mxbackup.queue.prefetchchild"


def delivering_server(tmp_path: Path) -> tuple[Twistd, int, object]:
    primary = free_port()
    data = base_config(tmp_path)
    data["routes"][0]["port"] = primary
    sink = start_smtp_sink(primary, tmp_path / "dump")
    server = Twistd(write_config(tmp_path, data), tmp_path / "twistd.log").start()
    with server.smtp() as c:
        c.sendmail("s@sender.test", ["u@example.com"], b"Subject: x\r\n\r\nbody\r\n")
    assert server.proc is not None
    deadline = time.monotonic() + 20
    while not (children := children_of(server.proc.pid, CHILD)):
        assert time.monotonic() < deadline, server.logtext()[-2000:]
        time.sleep(0.02)  # polling for the delivery
    (child,) = children
    return server, child, sink


def test_a_stop_signalled_to_every_process_is_quiet_and_ends_the_child(tmp_path: Path) -> None:
    """systemd's stop sends SIGTERM to every process of the service: the prefetch process
    ignores it and ends when the server closes its input; nothing is logged as a failure."""
    server, child, sink = delivering_server(tmp_path)
    try:
        os.kill(child, signal.SIGTERM)
        server.stop()  # (twistd's exit status then is the signal's)
        assert process_gone(child)
        assert "prefetch process ended" not in server.logtext()
    finally:
        sink.kill()  # type: ignore[attr-defined]


def test_the_prefetch_process_dies_with_a_killed_server(tmp_path: Path) -> None:
    server, child, sink = delivering_server(tmp_path)
    try:
        server.kill9()
        assert process_gone(child)
    finally:
        sink.kill()  # type: ignore[attr-defined]
