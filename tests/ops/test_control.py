"""Queue control, reload and ETRN against the real twistd, through the `mxbackup` command."""

from __future__ import annotations

import json
import os
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


def test_list_pages_and_streams_all(server):
    for _ in range(3):
        send(server)
    every = queue_json(server)
    assert len(every) >= 3
    first = cli(server, "queue", "list", "--limit", "2")
    assert first.returncode == 0, first.stderr
    assert f"{len(every) - 2} more message(s) not shown" in first.stdout
    assert every[0]["id"] in first.stdout and every[2]["id"] not in first.stdout
    paged = cli(server, "queue", "list", "--all", "--json")
    assert [m["id"] for m in json.loads(paged.stdout)] == [m["id"] for m in every]


class _Queue:
    def __init__(self, ids):
        self.clock = type("C", (), {"seconds": staticmethod(lambda: 100.0)})()
        self.queue = {qid: self.envelope(qid) for qid in ids}

    @staticmethod
    def envelope(qid):
        from mxbackup.queue.envelope import Envelope, Recipient

        return Envelope(qid, "s@x.test", [Recipient("u@example.com", None)], 1.0, 10)


def test_list_page_after_uses_the_first_pages_snapshot():
    from mxbackup.ops.control import Commands

    sched = _Queue(["B", "A", "D", "C"])
    commands = Commands(sched, None, None, None)  # type: ignore[arg-type]

    def ids(**kw):
        results = []
        commands.list(**kw).addCallback(results.append)  # a small queue: sorted at once
        return [m["id"] for m in results[0]]

    assert [m["id"] for m in commands.list()] == ["A", "B", "C", "D"]
    assert ids(limit="2") == ["A", "B"]
    del sched.queue["C"]  # gone since the first page: skipped
    sched.queue["0"] = sched.envelope("0")  # queued since: not in this listing
    assert ids(limit="2", after="B") == ["D"]
    assert ids(limit="5")[0] == "0"  # a new listing sees it


def test_a_big_listing_is_sorted_in_runs_one_per_reactor_turn(monkeypatch):
    from twisted.internet.task import Clock

    from mxbackup.ops import control

    monkeypatch.setattr(control, "LIST_CHUNK", 3)
    sched = _Queue([f"{i:03d}" for i in (5, 1, 9, 7, 3, 8, 2, 6, 4, 0)])
    sched.clock = Clock()
    commands = control.Commands(sched, None, None, None)  # type: ignore[arg-type]
    results = []
    commands.list(limit="4").addCallback(results.append)
    assert not results  # the first run sorted; the others wait for their turns
    sched.clock.advance(0)
    sched.clock.advance(0)
    sched.clock.advance(0)
    assert [m["id"] for m in results[0]] == ["000", "001", "002", "003"]
    results.clear()
    commands.list(limit="10", after="003").addCallback(results.append)  # the same snapshot
    assert [m["id"] for m in results[0]] == ["004", "005", "006", "007", "008", "009"]
