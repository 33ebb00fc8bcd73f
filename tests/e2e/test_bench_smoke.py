"""Smoke test of the benchmark harness: `bench/run.py --quick` runs end to end.

Tiny counts, so the figures mean nothing and nothing here checks a timing: only that every
part ran and wrote the keys the README table is built from.  Needs root (an isolated Postfix
instance; apt-get install postfix when missing); skips otherwise.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
RUN = ROOT / "bench" / "run.py"

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0, reason="the bench needs root (isolated Postfix instance, apt-get)"
)

SKIP_CODES = {
    2: "the bench needs root",
    3: "Postfix (smtp-source, smtp-sink) or the venv could not be installed",
    4: "another bench run is in progress (it holds the bench lock)",
}


def run_quick(out: Path) -> tuple[int, str]:
    proc = subprocess.Popen(
        [sys.executable, str(RUN), "--quick", "--out", str(out), "--lock-wait", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=str(ROOT),
    )
    try:
        output, _ = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGTERM)  # run.py cleans up its servers on SIGTERM
        try:
            output, _ = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            output, _ = proc.communicate()
        pytest.fail("bench/run.py --quick did not finish in 300 s:\n" + output.decode()[-3000:])
    return proc.returncode, output.decode("utf-8", "replace")


def test_quick_bench_writes_every_figure(tmp_path: Path) -> None:
    rc, output = run_quick(tmp_path)
    if rc in SKIP_CODES:
        pytest.skip(f"{SKIP_CODES[rc]}: {output.strip()[-300:]}")
    assert rc == 0, output[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["errors"] == []
    assert results["mode"] == "quick"
    for key in ("date", "machine", "settings", "acceptance", "latency", "drain", "scale"):
        assert key in results, key
    for key in ("nproc", "cpu_model", "kernel", "postfix_version", "python_version"):
        assert results["machine"][key], key

    acc = results["acceptance"]
    assert set(acc) == {f"{s}_c{c}" for s in ("5KB", "100KB") for c in (1, 10, 50)}
    for cell in acc.values():
        for system in ("postfix", "mxbackup"):
            fig = cell[system]
            assert fig["msgs_per_sec_median"] > 0
            assert fig["msgs_per_sec_min"] <= fig["msgs_per_sec_median"] <= fig["msgs_per_sec_max"]
            assert fig["cpu_seconds_per_msg"] >= 0
            assert len(fig["runs"]) == 3
        assert cell["ratio"]["msgs_per_sec"] > 0

    for system in ("postfix", "mxbackup"):
        lat = results["latency"][system]
        assert lat["error_count"] == 0
        assert 0 < lat["p50_ms"] <= lat["p99_ms"]
        paced = results["latency"]["paced"][system]  # both offered the same load
        assert paced["error_count"] == 0 and paced["offered_msgs_per_sec"] > 0
        assert 0 < paced["p50_ms"] <= paced["p99_ms"]
        drain = results["drain"][system]
        assert drain["msgs_per_sec"] > 0
        assert drain["first_delivery_seconds"] >= 0
        assert drain["delivered_to_sink"] >= drain["messages"]
    assert "flush_command" in results["drain"]["postfix"]
    assert results["drain"]["mxbackup"]["probe_interval_seconds"] == 1
    for key in ("p50_ms", "p99_ms"):
        assert results["latency"]["ratio"][key] > 0

    scale = results["scale"]
    assert scale["recovery_seconds"] > 0
    assert scale["rss_mb"] > 0
    assert scale["queued_after_start"] == scale["messages"]
    assert len([k for k in scale["tick"] if k.isdigit()]) == 2
    for tick in (v for k, v in scale["tick"].items() if k.isdigit()):
        assert tick["idle_tick_us_median"] > 0
        assert tick["due100_tick_us_median"] > 0

    assert results["table"]
    md = (tmp_path / "results.md").read_text()
    assert "| measurement | unit | better | Postfix | mxbackup | ratio |" in md
    assert "acceptance 5 KB c=10" in md
