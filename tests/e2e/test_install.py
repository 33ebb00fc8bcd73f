"""The plugin is found however mxbackup is installed, from any directory, without PYTHONPATH.

Twisted finds ``twistd`` sub-commands only in ``twisted/plugins/`` directories on sys.path.
An editable install (what ``make run`` does) must put the checkout on sys.path (a static
.pth: setup.cfg's ``package_dir``), a regular install copies the plugin into site-packages.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ROOT, base_config, write_config

BIN = Path(sys.executable).parent
_LISTENING = re.compile(rb"SMTPFactory starting on (\d+)")


def _env_without_pythonpath() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def readme_server_line() -> list[str]:
    """The command the README gives for running the server, as a user would copy it."""
    text = (ROOT / "README.md").read_text()
    m = re.search(r"The server itself is `([^`]+)`", text)
    assert m, "README.md no longer says how to run the server"
    return shlex.split(m.group(1))


def run_until_listening(argv: list[str], cwd: Path, env: dict[str, str], log: Path) -> int:
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            m = _LISTENING.search(log.read_bytes())
            if m:
                return int(m.group(1))
            if proc.poll() is not None:
                break
            time.sleep(0.05)  # polling for start-up, not waiting for time to pass
        raise AssertionError(f"{argv} did not start: {log.read_text(errors='replace')}")
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(15)


def test_readme_server_line_runs_from_another_directory(tmp_path):
    argv = readme_server_line()
    assert argv[0].endswith("twistd") and "mxbackup" in argv
    config = write_config(tmp_path, base_config(tmp_path))
    argv = [str(BIN / "twistd") if a.endswith("twistd") else a for a in argv]
    argv = [str(config) if a == "FILE" else a for a in argv]
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    port = run_until_listening(argv, elsewhere, _env_without_pythonpath(), tmp_path / "log")
    assert port > 0


def test_regular_install_finds_the_plugin(tmp_path):
    """A wheel installed into a fresh venv (its dependencies borrowed from this one)."""
    wheels = tmp_path / "wheels"
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(wheels), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    if built.returncode != 0:
        pytest.skip(f"cannot build a wheel here: {built.stderr[-300:]}")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    ours = next(Path(p) for p in sys.path if p.endswith("site-packages") and Path(p).is_dir())
    # A plain path line: the editable install's own .pth files over there are not processed.
    (site / "borrowed.pth").write_text(f"{ours}\n")
    wheel = next(wheels.glob("mxbackup-*.whl"))
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site)]
        + [str(wheel)],
        check=True,
        timeout=300,
    )
    assert (site / "twisted" / "plugins" / "mxbackup_plugin.py").is_file()
    python = venv / "bin" / "python"
    config = write_config(tmp_path, base_config(tmp_path))
    argv = [str(python), "-c", "from twisted.scripts.twistd import run; run()"]
    argv += ["--nodaemon", "--pidfile=", "mxbackup", "--config", str(config)]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    assert run_until_listening(argv, tmp_path, env, tmp_path / "log") > 0
    # ... and the code that ran is the installed copy, not the checkout.
    where = subprocess.run(
        [str(python), "-c", "import mxbackup; print(mxbackup.__file__)"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=True,
    )
    assert where.stdout.strip().startswith(str(site))
