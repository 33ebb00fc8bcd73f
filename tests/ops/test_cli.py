"""The ``mxbackup`` command itself (its queue commands are in test_control.py, check-config
in tests/test_config.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import bcrypt

from helpers import ROOT


def mxbackup(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mxbackup.cli", *args], cwd=ROOT, timeout=60, **kw)


def test_a_reader_that_goes_away_is_no_traceback():
    """Regression (issue 15): ``mxbackup queue show ID --json | head`` ended in a
    BrokenPipeError traceback.  Here the pipe's reader is gone before anything is written."""
    read, write = os.pipe()
    os.close(read)
    try:
        proc = mxbackup("check-config", "etc/mx.yaml", stdout=write, stderr=subprocess.PIPE)
    finally:
        os.close(write)
    assert proc.stderr == b""
    assert proc.returncode == 141


def test_hash_password_prints_a_bcrypt_hash_the_config_accepts():
    proc = mxbackup(
        "hash-password", "--rounds", "4", input="s3cret\n", capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    hashed = proc.stdout.strip()
    assert hashed.startswith("$2b$04$") and len(hashed) == 60
    assert bcrypt.checkpw(b"s3cret", hashed.encode())


def test_hash_password_refuses_what_bcrypt_would_cut_or_nothing():
    for given in ("\n", "x" * 73 + "\n"):
        proc = mxbackup("hash-password", input=given, capture_output=True, text=True)
        assert proc.returncode == 1 and proc.stdout == ""
        assert proc.stderr.startswith("mxbackup: ")


def test_check_config_refuses_what_the_server_would(tmp_path):
    """Regression (issue 15): check-config and the server share one validation."""
    text = (ROOT / "etc" / "mx.yaml").read_text().replace("tcp:2525:", "tcp:25xx:")
    assert "tcp:25xx:" in text
    bad = tmp_path / "mx.yaml"
    bad.write_text(text)
    proc = mxbackup("check-config", str(bad), capture_output=True, text=True)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.startswith(f"{bad}: server.listen[0]: bad endpoint 'tcp:25xx:")


def test_hash_password_takes_the_bytes_as_given():
    """Regression (review): a password that is not UTF-8 ended in a UnicodeEncodeError."""
    proc = mxbackup("hash-password", "--rounds", "4", input=b"caf\xe9\n", capture_output=True)
    assert proc.returncode == 0, proc.stderr
    assert bcrypt.checkpw(b"caf\xe9", proc.stdout.strip())


def test_queue_list_shows_why_the_target_is_down(monkeypatch, capsys):
    """A probe's failure (a certificate from another CA) is shown under the recipient's
    last reply (an older connection refusal), text and --json alike."""
    import argparse

    from mxbackup.ops import queuecli

    why = "starttls: TLS certificate verification failed: unable to get local issuer certificate"
    rcpt = {
        "address": "u@example.com",
        "route": "example.com",
        "state": "pending",
        "attempts": 1,
        "next_attempt": None,
        "target": "example.com",
        "last_reply": "connect: refused",
        "target_reason": why,
    }
    message = {"id": "Q1", "age": 5, "size": 10, "sender": "s@x", "held": False}
    found = [{**message, "recipients": [rcpt]}]
    monkeypatch.setattr(queuecli, "talk", lambda args, cmd, **kw: (0, found))
    monkeypatch.setattr(queuecli, "_unread", lambda args: "")  # no load in the background
    monkeypatch.setattr(queuecli, "_selection", lambda args: [{}])
    assert queuecli._queue_list(argparse.Namespace(json=False, all=True)) == 0
    out = capsys.readouterr().out
    assert "connect: refused" in out
    assert f"target example.com is down: {why}" in out
    assert queuecli._queue_list(argparse.Namespace(json=True, all=True)) == 0
    assert why in capsys.readouterr().out


def test_status_says_how_much_of_a_big_queue_is_still_being_read(monkeypatch, capsys) -> None:
    """``queue.background``: the server accepts mail while it reads a big queue; ``status``
    counts what it has read and says how much is left (and if the load stopped, why)."""
    import argparse

    from mxbackup.ops import queuecli

    info = {"now": 0.0, "paused": False, "queue": 10, "targets": []}
    for loading, line in [
        ({"loaded": 10, "of": 25, "failed": None}, "loading: 15 more queued message(s)"),
        ({"loaded": 10, "of": 25, "failed": "I/O error"}, "STOPPED: I/O error"),
        (
            {"loaded": 10, "of": 25, "failed": "I/O error", "retrying": True},
            "the last read failed: I/O error (it is tried again)",
        ),
    ]:
        reply = {**info, "loading": loading}
        monkeypatch.setattr(queuecli, "talk", lambda a, c, reply=reply, **k: (0, reply))
        assert queuecli._status(argparse.Namespace(json=False)) == 0
        assert line in capsys.readouterr().out
    monkeypatch.setattr(queuecli, "talk", lambda a, c, **k: (0, info))
    assert queuecli._status(argparse.Namespace(json=False)) == 0
    assert "loading" not in capsys.readouterr().out


def test_a_listing_during_a_background_load_says_it_is_partial(monkeypatch, capsys) -> None:
    """``queue.background``: what is not read yet is not listed; the listing says so (asked
    first: an upper bound), and an empty one is not "Mail queue is empty"."""
    import argparse

    from mxbackup.ops import queuecli

    message = {"id": "Q1", "age": 5, "size": 10, "sender": "s@x", "held": False}
    reading = {"loaded": 10, "of": 25, "failed": None}
    monkeypatch.setattr(queuecli, "_selection", lambda args: [{}])
    for listed, progress, expected in [
        ([], reading, "-- and 15 more queued message(s) of the whole queue still being read"),
        ([{**message, "recipients": []}], reading, "-- and 15 more queued message(s)"),
        ([], {**reading, "failed": "EIO"}, "not read: the load stopped (EIO); they wait on disk"),
        ([], {**reading, "failed": "EIO", "retrying": True}, "of the whole queue still being read"),
        ([], {**reading, "loaded": 25}, "Mail queue is empty"),  # read, being settled
        ([], None, "Mail queue is empty"),
        ([], RuntimeError("unknown command"), "Mail queue is empty"),  # an older server
    ]:

        def answer(path: str, cmd: str, progress: Any = progress, **kw: Any) -> Any:
            if isinstance(progress, Exception):
                raise progress
            return progress

        monkeypatch.setattr(queuecli, "request", answer)
        monkeypatch.setattr(queuecli, "talk", lambda a, c, r=listed, **k: (0, r))
        assert queuecli._queue_list(argparse.Namespace(json=False, all=True, socket="s")) == 0
        out = capsys.readouterr()
        assert expected in out.out and out.err == ""


def test_the_command_starts_without_twisted() -> None:
    """``mxbackup status``, ``queue list``... import neither Twisted nor OpenSSL (0.38 s to
    start before, 0.12 s now); ``check-config`` and ``--older-than`` load what they need."""
    import subprocess
    import sys

    code = (
        "import sys, mxbackup.cli; "
        "print(sorted(m for m in sys.modules if m.startswith(('twisted', 'OpenSSL'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
