"""Queue control, reload and ETRN against the real twistd, through the `mxbackup` command."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys

import pytest

from helpers import ROOT, Twistd, base_config, spool_files, write_config


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("control")
    (tmp / "list.txt").write_text("alice@sub.example.org\n")
    data = base_config(tmp)
    data["routes"][1]["addresses"] = {"file": str(tmp / "list.txt")}
    # The sender's domain has a route too: DSNs to it go there (and stay queued: it is down).
    data["routes"].append({"domain": "sender.test", "target_host": "127.0.0.1", "port": 9})
    data["routes"].append({"domain": "empty.test", "target_host": "127.0.0.1", "port": 9})
    data["delivery"] = {"probe_interval": 3600}  # the primary (port 9) stays "down"
    t = Twistd(write_config(tmp, data), tmp / "twistd.log").start()
    t.tmp = tmp
    t.data = data
    yield t
    t.stop()


def cli(server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mxbackup.ops.cli", *args, "--config", str(server.config_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )


def queue_json(server) -> list[dict]:
    out = cli(server, "queue", "list", "--json")
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def send(server, rcpt: str = "u@example.com", ip: str = "127.0.0.9") -> str:
    with server.smtp(ip) as c:
        c.ehlo("c.test")
        c.mail("s@sender.test")
        assert c.rcpt(rcpt)[0] == 250
        code, resp = c.data(b"Subject: control\r\n\r\nbody\r\n")
        assert code == 250
        return resp.decode().rsplit(" ", 1)[1]


def test_socket_is_private(server):
    # Once it answers, it is listening; Twisted sets the mode between bind and listen, so a
    # stat right after the SMTP port came up could see the socket before its chmod.
    queue_json(server)
    mode = os.stat(server.tmp / "spool" / "control.sock").st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600


def test_list_shows_per_recipient_state(server):
    qid = send(server)
    (entry,) = [m for m in queue_json(server) if m["id"] == qid]
    assert entry["sender"] == "s@sender.test" and entry["size"] > 0 and entry["age"] >= 0
    (rcpt,) = entry["recipients"]
    assert rcpt["address"] == "u@example.com" and rcpt["state"] == "pending"
    assert set(rcpt) >= {"attempts", "next_attempt", "last_reply"}
    human = cli(server, "queue", "list")
    assert qid in human.stdout and "<u@example.com>" in human.stdout


def test_show_hold_release_flush_delete_bounce(server):
    qid = send(server)
    shown = cli(server, "queue", "show", qid)
    assert shown.returncode == 0 and "Subject: control" in shown.stdout
    assert cli(server, "queue", "hold", qid).returncode == 0
    assert [m["held"] for m in queue_json(server) if m["id"] == qid] == [True]
    assert cli(server, "queue", "release", qid).returncode == 0
    assert [m["held"] for m in queue_json(server) if m["id"] == qid] == [False]
    out = cli(server, "queue", "flush", "--route", "example.com")
    assert out.returncode == 0 and "flushed" in out.stdout
    assert cli(server, "queue", "flush", qid).returncode == 0
    assert cli(server, "queue", "delete", qid).returncode == 0
    assert qid not in {m["id"] for m in queue_json(server)}
    assert qid not in spool_files(server.tmp / "spool", "new")
    missing = cli(server, "queue", "delete", qid)
    assert missing.returncode == 1 and "no message" in missing.stderr
    other = send(server)
    assert cli(server, "queue", "bounce", other).returncode == 0
    ids = {m["id"] for m in queue_json(server)}
    assert other not in ids
    dsns = [m for m in queue_json(server) if m["sender"] == ""]
    assert any(
        r["address"] == "s@sender.test" and r["route"] == "sender.test"
        for m in dsns
        for r in m["recipients"]
    )


def test_reload_address_list_while_a_client_is_connected(server):
    with server.smtp("127.0.0.9") as c:
        c.ehlo("c.test")
        c.mail("s@sender.test")
        assert c.rcpt("carol@sub.example.org")[0] == 550
        (server.tmp / "list.txt").write_text("alice@sub.example.org\ncarol@sub.example.org\n")
        out = cli(server, "reload")
        assert out.returncode == 0, out.stderr
        assert c.rcpt("carol@sub.example.org")[0] == 250  # same connection, new list
        assert c.data(b"Subject: after reload\r\n\r\nx\r\n")[0] == 250


def test_bad_config_reload_is_refused_and_the_old_one_stays(server):
    good = server.config_path.read_text()
    try:
        server.config_path.write_text(good.replace("hostname: mx2.example.net", "hostnme: x"))
        out = cli(server, "reload")
        assert out.returncode == 1
        assert "server.hostnme: unknown key" in out.stderr
        send(server)  # still serving with the old configuration
    finally:
        server.config_path.write_text(good)
    assert cli(server, "reload").returncode == 0


def test_etrn_from_allowed_and_refused_addresses(server):
    send(server)
    with server.smtp("127.0.0.1") as c:
        c.ehlo("c.test")
        assert c.has_extn("etrn")
        code, msg = c.docmd("ETRN", "example.com")
        assert code == 253 and b"pending messages for node example.com started" in msg
        assert c.docmd("ETRN", "empty.test")[0] == 251  # routed, nothing queued
        assert c.docmd("ETRN", "@example.org")[0] in (251, 253)  # the wildcard route
        assert c.docmd("ETRN", "elsewhere.test")[0] == 459  # not a routed domain
        assert c.docmd("ETRN", "")[0] == 501
    with server.smtp("127.0.0.9") as c:
        c.ehlo("c.test")
        assert not c.has_extn("etrn")
        code, msg = c.docmd("ETRN", "example.com")
        assert code == 459 and msg.startswith(b"4.7.1")


def test_unreachable_server_exit_status(tmp_path):
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mxbackup.ops.cli",
            "queue",
            "list",
            "--socket",
            str(tmp_path / "x"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 3 and "cannot reach the server" in out.stderr


def cli_in(server, stdin: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mxbackup.ops.cli", *args, "--config", str(server.config_path)],
        capture_output=True, text=True, cwd=ROOT, timeout=30, input=stdin,
    )  # fmt: skip


def test_whole_queue_selectors_from_the_command_line(server):
    ids = [send(server, "u@example.com") for _ in range(3)]
    out = cli(server, "queue", "hold", "--recipient", "u@example.com")
    assert out.returncode == 0 and "held" in out.stdout, out.stderr
    assert all(m["held"] for m in queue_json(server) if m["id"] in ids)
    out = cli_in(server, "\n".join(ids[:2]) + "\n", "queue", "release", "-")
    assert out.returncode == 0 and out.stdout.startswith("released 2 message(s)"), out.stdout
    out = cli(server, "queue", "delete", "--older-than", "1h", "--route", "example.com")
    assert out.returncode == 0 and "deleted 0" in out.stdout  # none that old
    out = cli(server, "queue", "delete", ids[0], ids[1], "NOSUCHID")
    assert out.returncode == 1 and "no message NOSUCHID" in out.stderr
    assert cli(server, "queue", "delete").returncode == 2  # a selector is required
    out = cli(server, "queue", "delete", *ids)
    assert out.returncode == 0 and "deleted 3" in out.stdout
    assert not {m["id"] for m in queue_json(server)} & set(ids)


def test_show_body_pause_status_summary(server):
    qid = send(server)
    body = cli(server, "queue", "show", qid, "--body")
    assert body.returncode == 0 and "\nSubject: control\n" in body.stdout
    assert body.stdout.startswith("Received: ")  # the stored message, our header on top
    out = cli(server, "pause", "example.com")
    assert out.returncode == 0 and "paused routes: example.com" in out.stdout
    assert (server.tmp / "spool" / "paused.json").exists()
    status = json.loads(cli(server, "status", "--json").stdout)
    (target,) = [t for t in status["targets"] if t["target"] == "example.com"]
    assert target["paused"] and target["messages"] >= 1 and target["oldest"]
    human = cli(server, "status")
    assert human.returncode == 0 and "example.com -> 127.0.0.1:9  PAUSED" in human.stdout
    (m,) = [m for m in queue_json(server) if m["id"] == qid]
    assert m["recipients"][0]["next_try_why"] == "paused"
    assert "paused routes: none" in cli(server, "resume", "example.com").stdout
    shape = cli(server, "queue", "summary")
    assert shape.returncode == 0 and "TOTAL" in shape.stdout and "example.com" in shape.stdout
    assert "example.com" in json.loads(cli(server, "queue", "summary", "--json").stdout)["targets"]
    listing = cli(server, "queue", "list")
    assert "retries left, next:" in listing.stdout


def test_monitor_follows_events_and_ends_cleanly(server):
    proc = subprocess.Popen(
        [sys.executable, "-m", "mxbackup.ops.cli", "monitor", "--json",
         "--config", str(server.config_path)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, text=True,
        # as typed in a terminal: a suite run in the background (``cmd &`` in a script)
        # passes SIGINT on ignored, and Ctrl-C would then do nothing
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # fmt: skip
    try:
        assert "following" in proc.stderr.readline()  # connected: events come from now on
        qid = send(server)
        for _ in range(20):
            event = json.loads(proc.stdout.readline())
            if event.get("id") == qid:
                break
        assert event["text"].startswith("accepted id=")
    finally:
        proc.send_signal(2)  # Ctrl-C
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0 and "Traceback" not in err
