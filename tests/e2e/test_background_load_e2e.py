"""A big queue read while the server already accepts mail (``queue.recoverysteps``), as an operator
meets it: the server is ready before the queue is read, takes mail meanwhile, then delivers
the old and the new once each; a crash in the middle of the load loses nothing."""

from __future__ import annotations

import os
import re
import time
import zlib

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
from mxbackup.ops.talk import request
from mxbackup.queue import checkpoint
from mxbackup.queue.envelope import Envelope, Recipient, new_queue_id
from mxbackup.queue.recoverysteps import BACKGROUND_FROM
from mxbackup.queue.rounds import CHECKPOINT

COUNT = BACKGROUND_FROM
_LOADED = re.compile(rb"queue loaded: (\d+) messages")


def wait_loaded(server: Twistd, timeout: float = 120) -> int:
    return int(server._wait_for(_LOADED, timeout, "the queue was not loaded").group(1))


def send(server: Twistd, subject: str) -> None:
    with server.smtp() as c:
        c.sendmail("s@sender.test", ["u@example.com"], f"Subject: {subject}\r\n\r\nhi\r\n")


def test_mail_is_taken_while_a_big_queue_loads_and_all_of_it_delivered(tmp_path):
    smtp_sink_bin()
    sink_port = free_port()
    spool = tmp_path / "spool"
    qids = queue_waiting(spool, COUNT)  # waiting for a primary that was down, next try in an hour
    data = base_config(tmp_path)
    data["routes"][0]["port"] = sink_port
    dump = tmp_path / "sink"
    sink = start_smtp_sink(sink_port, dump)  # the primary is back
    server = Twistd(write_config(tmp_path, data), tmp_path / "log")
    try:
        ready = server.start(timeout=60).wait_ready(60).decode()
        assert "more being read" in ready, ready
        send(server, "DURINGTHELOAD")  # answered 250 before the queue is read
        assert wait_loaded(server) == COUNT
        deadline = time.monotonic() + 120
        while spool_files(spool, "env") and time.monotonic() < deadline:
            time.sleep(0.2)  # polling for the drain (the start-up probe's flush)
    finally:
        server.stop()
        sink.kill()
        sink.wait()
    assert spool_files(spool, "env") == [] and spool_files(spool, "new") == []
    subjects = [re.search(rb"Subject: (\w+)", f.read_bytes()) for f in dump.iterdir()]
    got = sorted(m.group(1).decode() for m in subjects if m)
    assert got == sorted([*qids, "DURINGTHELOAD"])  # each once
    assert not (spool / checkpoint.PIN).exists()


def torn_commit(spool, at: float) -> str:
    """A commit a power cut tore (its message's blocks never written, never acknowledged),
    by a round that started at ``at``; its id sorts after every other: read last."""
    qid = new_queue_id(time.time() + 1)
    data = b"Subject: TORN\r\n\r\nnever acknowledged\r\n"
    rcpt = Recipient("u@example.com", "example.com", next_attempt=time.time() + 3600)
    env = Envelope(id=qid, sender="s@sender.test", recipients=[rcpt], received_at=at,
                   size=len(data), crc=zlib.crc32(data))  # fmt: skip
    (spool / "new" / qid).write_bytes(b"\0" * len(data))
    (spool / "env" / qid).write_bytes(env.to_json())
    os.utime(spool / "env" / qid, (at, at))
    return qid


def test_a_crash_in_the_middle_of_the_load_loses_nothing_and_rechecks_the_torn(tmp_path):
    """The first start pins recovery's window (the checkpoint is 100 s old, and a torn commit
    after it); the mail it accepts moves the checkpoint on; it is killed before the load
    reaches the torn commit.  The next start still checks it (the pin) and sets it aside,
    and every other message is there."""
    spool = tmp_path / "spool"
    queue_waiting(spool, COUNT)
    checkpoint_at = time.time() - 100
    (spool / CHECKPOINT).touch()
    os.utime(spool / CHECKPOINT, (checkpoint_at, checkpoint_at))
    torn = torn_commit(spool, checkpoint_at + 1)
    server = Twistd(write_config(tmp_path, base_config(tmp_path)), tmp_path / "log")
    try:
        server.start(timeout=60).wait_ready(60)
        send(server, "ACCEPTED")  # a round: the checkpoint is now
        assert (spool / CHECKPOINT).stat().st_mtime > checkpoint_at + 50
        server.kill9()
        assert "queue loaded" not in server.logtext()  # killed in the middle of the load
        assert (spool / checkpoint.PIN).exists()
        server.start(timeout=60).wait_ready(60)
        assert wait_loaded(server) == COUNT + 1
        status = request(str(spool / "control.sock"), "status")
        assert status["queue"] == COUNT + 1 and "loading" not in status
    finally:
        server.stop()  # (a failed assertion must not leave the server running)
    assert len(spool_files(spool, "env")) == COUNT + 1 == len(spool_files(spool, "new"))
    assert spool_files(spool, "corrupt") == sorted([torn, torn + ".env"])
    assert "a torn commit, never acknowledged" in server.logtext()
    assert not (spool / checkpoint.PIN).exists()
