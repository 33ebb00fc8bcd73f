"""Why mail waits, end to end: the real server, a primary that is up but cannot be used as
the route wants it (a certificate from another CA; our AUTH password wrong), default delivery
settings.  ``mxbackup queue list`` and the log must say why (issue 14, item 2)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from helpers import ROOT, Twistd, base_config, write_config


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 20.0) -> bool:
    """Poll for an outcome produced by other processes (not a sleep for time to pass)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


@pytest.fixture
def world(tmp_path):
    made = []

    def make(mode: str, route: dict) -> Twistd:
        port = free_port()
        primary = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "e2e" / "tlsprimary.py"), str(port), ".", mode],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            env={"PYTHONPATH": f"{ROOT / 'tests'}:{ROOT}"},
        )
        made.append(primary.kill)
        assert primary.stdout is not None and primary.stdout.readline() == b"ready\n"
        data = base_config(tmp_path)
        data["routes"][0].update(
            {
                "target_host": "127.0.0.1",
                "port": port,
                "security": "starttls_required",
                "verify_certificate": True,
                "ca_file": str(tmp_path / "ca.pem"),
                **route,
            }
        )
        server = Twistd(write_config(tmp_path, data), tmp_path / "twistd.log").start()
        made.append(server.stop)
        return server

    yield make
    for stop in reversed(made):
        stop()


def queue_list(server: Twistd, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mxbackup.ops.cli", "queue", "list", *args]
        + ["--config", str(server.config_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=30,
    )


def test_a_certificate_from_another_ca_is_the_visible_reason(world):
    server = world("other-ca", {})
    with server.smtp("127.0.0.9") as c:
        c.sendmail("s@sender.test", ["u@example.com"], b"Subject: x\r\n\r\nbody\r\n")
    why = "TLS certificate verification failed: unable to get local issuer certificate"
    assert wait_for(lambda: why in server.logtext()), server.logtext()[-2000:]
    text = queue_list(server).stdout
    assert why in text and "issuer CN=Some Other CA" in text, text
    (message,) = json.loads(queue_list(server, "--json").stdout)
    rcpt = message["recipients"][0]
    assert why in rcpt["last_reply"] and why in rcpt["target_reason"]
    assert "target example.com is down" in server.logtext()


def test_a_wrong_auth_password_shows_the_targets_reply(world):
    server = world(
        "auth",
        {
            "verify_certificate": False,  # TLS, not its name, is what this test is not about
            "authentication": {"username": "user", "password": "wrong-password"},
        },
    )
    with server.smtp("127.0.0.9") as c:
        c.sendmail("s@sender.test", ["u@example.com"], b"Subject: x\r\n\r\nbody\r\n")
    why = "auth: 535 5.7.8"
    assert wait_for(lambda: why in server.logtext()), server.logtext()[-2000:]
    text = queue_list(server).stdout
    assert why in text, text
