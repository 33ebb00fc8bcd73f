"""The start-up snapshot as an operator meets it (issue 17, goal 4): a clean stop of a big
queue leaves ``spool/snapshot``, the next start takes every unchanged envelope from it and
reads the others, and removes it; the queue is the same either way."""

from __future__ import annotations

import os
import re
import time

from helpers import (
    Twistd,
    base_config,
    free_port,
    queue_waiting,
    smtp_sink_bin,
    spool_files,
    start_smtp_sink,
    write_config,
)
from mxbackup.queue.snapshot import SNAPSHOT_FROM

COUNT = SNAPSHOT_FROM


def started_with(log: str) -> list[int]:
    return [int(n) for n in re.findall(r"mxbackup starting: \d+ routes, (\d+) messages", log)]


def test_a_clean_stop_s_snapshot_is_taken_where_the_files_did_not_change(tmp_path):
    spool = tmp_path / "spool"
    qids = queue_waiting(spool, COUNT)
    server = Twistd(write_config(tmp_path, base_config(tmp_path)), tmp_path / "log")
    server.start(timeout=60).wait_ready(60)
    server.stop()
    assert (spool / "snapshot").exists()
    assert f"stop: snapshot of {COUNT} of {COUNT} envelopes written" in server.logtext()

    # the operator holds one message by hand while the server is stopped: its file changed
    changed = spool / "env" / qids[17]
    data = changed.read_bytes().replace(b'"held":false', b'"held":true')
    tmp = spool / "tmp" / "edited"
    tmp.write_bytes(data)
    os.replace(tmp, changed)

    server.start(timeout=60).wait_ready(60)
    server.stop()
    log = server.logtext()
    assert started_with(log) == [COUNT, COUNT]
    assert f"{COUNT - 1} of {COUNT} envelopes as the snapshot of the last stop had them" in log
    assert log.count("snapshot of") >= 2  # a second stop wrote a new one


def test_a_crash_after_the_snapshot_was_read_starts_from_the_files(tmp_path):
    spool = tmp_path / "spool"
    queue_waiting(spool, COUNT)
    server = Twistd(write_config(tmp_path, base_config(tmp_path)), tmp_path / "log")
    server.start(timeout=60).wait_ready(60)
    server.stop()
    server.start(timeout=60).wait_ready(60)
    assert not (spool / "snapshot").exists()  # used once
    server.kill9()
    server.start(timeout=60).wait_ready(60)
    server.stop()
    log = server.logtext()
    assert started_with(log) == [COUNT] * 3
    assert log.count("as the snapshot of the last stop had them") == 1


def test_a_queue_started_from_the_snapshot_is_delivered_once(tmp_path):
    """The primary comes back while the backup is stopped: the queue the snapshot gave is
    flushed at start-up, every message reaches the primary once, and the spool empties."""
    smtp_sink_bin()  # skipped before any work where it is not installed
    sink_port = free_port()  # nothing listens there yet: the primary is down
    spool = tmp_path / "spool"
    qids = queue_waiting(spool, COUNT)
    data = base_config(tmp_path)
    data["routes"][0]["port"] = sink_port
    server = Twistd(write_config(tmp_path, data), tmp_path / "log")
    server.start(timeout=60).wait_ready(60)
    server.stop()
    assert (spool / "snapshot").exists()
    dump = tmp_path / "sink"
    sink = start_smtp_sink(sink_port, dump)
    try:
        server.start(timeout=60).wait_ready(60)
        deadline = time.monotonic() + 120
        while spool_files(spool, "env") and time.monotonic() < deadline:
            time.sleep(0.2)  # polling for the drain, not waiting for time to pass
        server.stop()
    finally:
        sink.kill()
        sink.wait()
    assert spool_files(spool, "env") == [] and spool_files(spool, "new") == []
    assert f"{COUNT} of {COUNT} envelopes as the snapshot" in server.logtext()
    subjects = [re.search(rb"Subject: (\w+)", f.read_bytes()) for f in dump.iterdir()]
    got = sorted(m.group(1).decode() for m in subjects if m)
    assert got == sorted(qids)  # each once
