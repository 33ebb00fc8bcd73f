"""Start-up as systemd sees it: all listeners bound, or a one-line error and exit status 1."""

from __future__ import annotations

import os
import socket
import subprocess

from helpers import ROOT, TWISTD, Twistd, base_config, write_config


def test_a_port_in_use_stops_the_server_with_one_line(tmp_path):
    """Regression (issue 15): a listener that could not bind was logged and the server
    ran on without SMTP (its control socket answered; systemd's Restart= never fired)."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    port = busy.getsockname()[1]
    try:
        data = base_config(tmp_path, listen=[f"tcp:{port}:interface=127.0.0.1"])
        config = write_config(tmp_path, data)
        proc = subprocess.run(
            [*TWISTD, "--nodaemon", "--pidfile=", "mxbackup", "--config", str(config)],
            cwd=tmp_path,
            env=dict(os.environ, PYTHONPATH=str(ROOT)),
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        busy.close()
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(
        f"mxbackup: {config}: server.listen[0]: cannot listen on "
        f"'tcp:{port}:interface=127.0.0.1': Couldn't listen on 127.0.0.1:{port}"
    ), lines[0]
    assert "mxbackup ready" not in proc.stdout


def test_ready_is_logged_once_every_listener_is_bound(tmp_path):
    server = Twistd(write_config(tmp_path, base_config(tmp_path)), tmp_path / "log").start()
    try:
        with server.smtp() as c:
            assert c.noop()[0] == 250
    finally:
        server.stop()
    log = server.logtext()
    assert log.count("mxbackup ready") == 1
    assert log.index("SMTPFactory starting on") < log.index("mxbackup ready")
    assert log.index("ControlFactory starting on") < log.index("mxbackup ready")


def test_a_systemd_socket_that_was_not_passed_is_one_line(tmp_path):
    """Regression (review): the endpoint was no longer parsed under a try at start-up, so a
    ``systemd:`` listener without its socket ended in an IndexError traceback."""
    config = write_config(tmp_path, base_config(tmp_path, listen=["systemd:domain=INET:index=0"]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("LISTEN_")}
    proc = subprocess.run(
        [*TWISTD, "--nodaemon", "--pidfile=", "mxbackup", "--config", str(config)],
        cwd=tmp_path,
        env=dict(env, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        f"mxbackup: {config}: server.listen[0]: bad endpoint "
        "'systemd:domain=INET:index=0': list index out of range"
    ], proc.stderr
