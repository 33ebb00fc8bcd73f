"""Recipient verification's cost: acceptance with verification on (warm cache) vs off, and
the cost of a new address (cold cache: one callout).

    python bench/verify.py [--messages 2000] [--concurrency 10] [--runs 3]

Runs the real server (``twistd mxbackup``) twice per run, alternating, against ``smtp-sink``
as the primary (up: callouts are answered 250 and mail is delivered, in both variants), with
``smtp-source`` sending 5 KB messages to one address (so the "on" variant answers every RCPT
from the cache after the first).  Then, with verification on, 300 RCPTs for new addresses on
one connection (each one callout to the primary) against 300 RCPTs for known ones: the
difference is the cold-cache cost per new address.  Loopback only; work directory under
/var/tmp; prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import smtplib
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
SMTP_SINK = shutil.which("smtp-sink") or "/usr/sbin/smtp-sink"
SMTP_SOURCE = shutil.which("smtp-source") or "/usr/sbin/smtp-source"


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def cpu_of(pid: int) -> float:
    """utime + stime of the process group led by ``pid`` (twistd and its spool process)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(stat[2]) == pid:  # field 5: pgrp
            total += (int(stat[11]) + int(stat[12])) / tick
    return total


class Server:
    def __init__(self, work: Path, primary: int, verify: bool) -> None:
        self.dir = Path(tempfile.mkdtemp(dir=work))
        self.port = free_port()
        route = {"domain": "example.com", "target_host": "127.0.0.1", "port": primary}
        if verify:
            route["verify_recipients"] = {"timeout": 5}
        config = {
            "server": {
                "hostname": "mx2.example.net",
                "listen": [f"tcp:{self.port}:interface=127.0.0.1"],
                "spool": str(self.dir / "spool"),
                "min_free_space": 0,
                "max_connections_per_ip": 200,
            },
            "routes": [route],
        }
        self.config = self.dir / "mx.yaml"
        self.config.write_text(yaml.safe_dump(config))

    def __enter__(self) -> Server:
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.log = open(self.dir / "twistd.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from twisted.scripts.twistd import run; run()",
             "--nodaemon", "--pidfile=", "mxbackup", "--config", str(self.config)],
            stdout=self.log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        )  # fmt: skip
        wait_port(self.port)
        return self

    def __exit__(self, *exc: object) -> None:
        os.killpg(self.proc.pid, signal.SIGTERM)
        self.proc.wait(30)
        self.log.close()


def acceptance(server: Server, n: int, concurrency: int) -> dict[str, float]:
    before = cpu_of(server.proc.pid)
    started = time.monotonic()
    subprocess.run(
        [SMTP_SOURCE, "-s", str(concurrency), "-m", str(n), "-l", "5000",
         "-f", "bench@sender.test", "-t", "user@example.com", f"127.0.0.1:{server.port}"],
        check=True, stdout=subprocess.DEVNULL,
    )  # fmt: skip
    wall = time.monotonic() - started
    time.sleep(1.0)  # let the deliveries to the primary finish (counted in the CPU)
    return {"msg_per_s": n / wall, "cpu_ms_per_msg": (cpu_of(server.proc.pid) - before) / n * 1e3}


def rcpt_latency(server: Server, addresses: list[str]) -> dict[str, float]:
    client = smtplib.SMTP("127.0.0.1", server.port, timeout=30)
    client.ehlo("bench.test")
    before = cpu_of(server.proc.pid)
    times = []
    for i in range(0, len(addresses), 50):  # 50 recipients per transaction (max_recipients)
        client.mail("bench@sender.test")
        for address in addresses[i : i + 50]:
            started = time.perf_counter()
            code, _ = client.rcpt(address)
            times.append(time.perf_counter() - started)
            assert code == 250, (address, code)
        client.rset()
    cpu = cpu_of(server.proc.pid) - before
    client.quit()
    return {
        "rcpt_ms_p50": statistics.median(times) * 1e3,
        "rcpt_ms_mean": statistics.fmean(times) * 1e3,
        "cpu_ms_per_rcpt": cpu / len(addresses) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="mxbackup-bench-verify-", dir="/var/tmp"))
    primary = free_port()
    root = ["-u", "nobody"] if os.geteuid() == 0 else []
    sink = subprocess.Popen([SMTP_SINK, *root, "-c", f"127.0.0.1:{primary}", "256"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    results: dict[str, list] = {"off": [], "on_warm": []}
    try:
        wait_port(primary)
        for run in range(args.runs):
            order = ("off", "on_warm") if run % 2 == 0 else ("on_warm", "off")
            for variant in order:
                with Server(work, primary, verify=variant != "off") as server:
                    acceptance(server, 50, 5)  # warm-up (and the cache's first entry)
                    results[variant].append(acceptance(server, args.messages, args.concurrency))
        with Server(work, primary, verify=True) as server:
            new = rcpt_latency(server, [f"new{i}@example.com" for i in range(300)])
            known = rcpt_latency(server, [f"new{i}@example.com" for i in range(300)])
        with Server(work, primary, verify=False) as server:
            off = rcpt_latency(server, [f"new{i}@example.com" for i in range(300)])
    finally:
        sink.terminate()
        sink.wait()
        shutil.rmtree(work, ignore_errors=True)
    summary = {
        variant: {
            "msg_per_s_median": statistics.median(r["msg_per_s"] for r in runs),
            "msg_per_s_runs": [round(r["msg_per_s"], 1) for r in runs],
            "cpu_ms_per_msg_median": statistics.median(r["cpu_ms_per_msg"] for r in runs),
        }
        for variant, runs in results.items()
    }
    summary["on_vs_off"] = (
        summary["on_warm"]["msg_per_s_median"] / summary["off"]["msg_per_s_median"]
    )
    summary["rcpt_new_address"] = new
    summary["rcpt_known_address"] = known
    summary["rcpt_verification_off"] = off
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
