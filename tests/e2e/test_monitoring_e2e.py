"""The manhole and the metrics endpoint of the real twistd, configured in mx.yaml as a user
would: ssh in with a key and read the queue depth; scrape /metrics with Prometheus's parser."""

from __future__ import annotations

import re
import shutil
import stat
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from helpers import Twistd, base_config, make_client_key, write_config

_STARTING = re.compile(rb"(\w+) starting on (\d+)")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("monitoring")
    key, public = make_client_key(tmp, "operator_key")
    (tmp / "authorized_keys").write_text(f"# operators\n{public}\n")
    data = base_config(tmp)
    data["delivery"] = {"probe_interval": 3600}  # the primary (port 9) stays down
    data["manhole"] = {
        "listen": "tcp:0:interface=127.0.0.1",
        "authorized_keys": str(tmp / "authorized_keys"),
    }
    data["metrics"] = {"listen": "tcp:0:interface=127.0.0.1"}
    t = Twistd(write_config(tmp, data), tmp / "twistd.log").start()
    t.tmp, t.key = tmp, key
    ports = {name: int(port) for name, port in _STARTING.findall(t.wait_ready())}
    t.manhole_port = ports[b"HardenedConchFactory"]
    t.metrics_port = ports[b"_QuietSite"]
    for i in range(3):  # three queued messages, two recipients refused
        with t.smtp("127.0.0.9") as c:
            c.ehlo("c.test")
            c.mail("s@sender.test")
            assert c.rcpt(f"u{i}@example.com")[0] == 250
            if i < 2:
                assert c.rcpt(f"x{i}@evil.test")[0] == 550
            assert c.data(b"Subject: m\r\n\r\nbody\r\n")[0] == 250
    yield t
    t.stop()


def ssh(server, stdin: str, key: Path | None = None) -> subprocess.CompletedProcess:
    if shutil.which("ssh") is None:
        pytest.skip("no ssh client (Debian openssh-client)")
    return subprocess.run(
        [
            "ssh",
            "-T",
            "-p",
            str(server.manhole_port),
            "-i",
            str(key or server.key),
            "-o",
            "IdentitiesOnly=yes",
            "-o",
            "BatchMode=yes",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            f"UserKnownHostsFile={server.tmp / 'known_hosts'}",
            "admin@127.0.0.1",
        ],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_manhole_reads_the_live_queue_depth(server):
    out = ssh(server, "print('depth=%d' % len(scheduler.queue))\nprint(config.server.hostname)\n")
    assert out.returncode == 0, out.stderr
    assert "depth=3" in out.stdout, out.stdout
    assert "mx2.example.net" in out.stdout


def test_manhole_refuses_an_unlisted_key(server, tmp_path):
    other, _ = make_client_key(tmp_path, "other_key")
    out = ssh(server, "print(1)\n", key=other)
    assert out.returncode == 255
    assert "Permission denied" in out.stderr


def test_manhole_host_key_is_private_and_kept(server):
    host_key = server.tmp / "spool" / "manhole_host_key"
    assert stat.S_IMODE(host_key.stat().st_mode) == 0o600


def scrape(server) -> dict[str, list]:
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as r:
        assert r.headers["content-type"].startswith("text/plain")
        text = r.read().decode()
    return {f.name: f.samples for f in text_string_to_metric_families(text)}


def test_metrics_scrape(server):
    deadline = time.monotonic() + 20
    while "target example.com is down" not in server.logtext():  # the first try has failed
        assert time.monotonic() < deadline, server.logtext()
        time.sleep(0.05)
    m = scrape(server)
    assert m["mxbackup_messages_accepted"][0].value == 3
    refused = {s.labels["code"]: s.value for s in m["mxbackup_recipients_refused"]}
    assert refused == {"550": 2}
    assert m["mxbackup_queue_messages"][0].value == 3
    depth = {s.labels["target"]: s.value for s in m["mxbackup_queue_depth"]}
    assert depth["example.com"] == 3
    up = {s.labels["target"]: s.value for s in m["mxbackup_target_up"]}
    assert up["example.com"] == 0  # port 9 refused: down
    assert m["mxbackup_oldest_message_age_seconds"][0].value >= 0
    assert "mxbackup_smtp_connections" in m
    assert {s.labels["outcome"] for s in m["mxbackup_deliveries"]} >= {"delivered", "bounced"}


def test_metrics_unknown_path_is_404(server):
    url = f"http://127.0.0.1:{server.metrics_port}/nope"
    with pytest.raises(urllib.error.HTTPError) as e:
        urllib.request.urlopen(url, timeout=10)
    assert e.value.code == 404
