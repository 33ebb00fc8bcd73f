"""A million queued messages (issue 17, goal 4): memory, start-up, tick, queue list, acceptance.

Run with the project's venv from the repository's root (``PYTHONPATH=.``); no root needed:

    python bench/million.py memory --count 100000 [--trace]
    python bench/million.py serve --count 100000 [--workdir /var/tmp] [--accept 2000] [--drain 60]
    python bench/million.py restart --count 1000000 --spool /var/tmp/m1/spool [--cold]
    python bench/million.py comeback --count 1000000 --spool /var/tmp/m1/spool
    python bench/million.py accept --count 1000000 --spool /var/tmp/m1/spool [--rounds 5]
    python bench/million.py drain --count 1000000 --spool /var/tmp/m1/spool [--seconds 20]

``memory`` (in-process, no server): writes N queued messages into a spool (``scale.generate``:
the server's own on-disk format), then times ``Scheduler.load(Spool.recovered())`` (as the
server starts) and reports the resident memory it adds (VmRSS delta, bytes per message) and the
peak; with ``--trace``, tracemalloc's total and top lines (slow:
use 20,000-100,000).

``serve`` (the real server): generates the spool, starts ``twistd mxbackup`` on it with the
primary down (a closed port) and measures: start-up to the ``mxbackup ready`` line; VmRSS and
VmHWM of twistd + its spool process; CPU per second while idle (the tick's cost with N queued:
nothing is due, the next attempts are 1-2 h ahead); ``mxbackup queue list`` (default page) and
``queue list --all`` wall time, and meanwhile the worst reactor stall seen by a client sending
NOOP every 5 ms; ``stats`` over the control socket; with ``--accept M``, ``smtp-source -s 10 -m
M -l 5120`` msg/s while full, then the same on an empty spool (the goal: within 20 %); with
``--drain S``, ``smtp-sink`` on the primary's port and messages delivered per second over S
seconds, from the first delivery and from the primary's return (compare with ``--count 2000``, a
burst, and ``--count 20000``, sustained: see the README), and the server's CPU per delivered
message over the whole drain (twistd and the spool process, from the primary's return to a
second after the last removal).  ``restart``: start-up to ``mxbackup ready`` reading every
envelope file, the clean stop's time (it writes the snapshot, ``queue.snapshot``), start-up from
the snapshot; with ``--cold``, after dropping the page cache (root).  ``accept``: acceptance
with the queue loaded and on an empty server, in alternating turns, each measured while the
other server is stopped.  ``drain``: start-up, the whole queue read, ``--seconds`` of the
drain above (with each process's CPU per delivered message: twistd, the spool process, the
prefetch process), a clean stop.  Prints one JSON object.
Figures taken on a shared machine are noise: run it alone.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import run  # bench/run.py: process helpers
import scale  # bench/scale.py: the spool generator

PY = sys.executable
TWISTD = str(Path(PY).parent / "twistd")
DOMAIN, RCPT, SENDER = "example.com", "user@example.com", "bench@sender.test"


def rss_kb(key: str = "VmRSS", pid: int | str = "self") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


def write_config(d: Path, spool: Path, port: int, primary: int, tick: float = 1.0) -> Path:
    cfg = d / f"mx-{spool.name}.yaml"  # one per spool: two servers may share the directory
    cfg.write_text(
        f"""\
server:
  hostname: mx2.example.net
  listen:
    - "tcp:{port}:interface=127.0.0.1"
  spool: {spool}
  max_connections: 500
  max_connections_per_ip: 200
  min_free_space: 0
routes:
  - domain: {DOMAIN}
    target_host: 127.0.0.1
    port: {primary}
    addresses:
      - {RCPT}
delivery:
  probe_interval: 1
  tick: {tick}
"""
    )
    return cfg


def generate(spool: Path, count: int) -> dict[str, Any]:
    if (spool / "env").is_dir() and (held := len(os.listdir(spool / "env"))):
        if held != count:  # e.g. --accept added to it: never write a second queue on top
            raise SystemExit(f"{spool} holds {held} queued, not {count}: use --count {held}")
        return {"count": count, "reused": True}
    return scale.generate(str(spool), count, DOMAIN, RCPT, SENDER, due_in=3600.0)


# -- memory (in-process) ------------------------------------------------------------------------
def memory(a: argparse.Namespace) -> dict[str, Any]:
    from twisted.internet.task import Clock

    from mxbackup import config as config_module
    from mxbackup.outbound.scheduler import Scheduler
    from mxbackup.queue.spool import Spool

    work = Path(tempfile.mkdtemp(prefix="million-", dir=a.workdir))
    try:
        spool = Path(a.spool) if a.spool else work / "spool"
        gen = generate(spool, a.count)
        cfg = write_config(work, spool, run.free_port(), run.free_port())
        config = config_module.load(str(cfg))
        gc.collect()
        if a.trace:
            import tracemalloc

            tracemalloc.start()
        base = rss_kb()
        clock = Clock()
        clock.advance(time.time())
        sched = Scheduler(config, Spool(str(spool), runner=scale._never), clock, None, None)  # type: ignore[arg-type]
        t = time.perf_counter()
        # As the server does: each envelope packed as it is read (``Spool.recovered``).
        sched.load(Spool(str(spool), runner=scale._never).recovered())
        load_s = time.perf_counter() - t
        gc.collect()
        after_load = rss_kb()
        t = time.perf_counter()
        gc.collect()
        gc_s = time.perf_counter() - t
        out: dict[str, Any] = {
            "count": a.count,
            "generate": gen,
            "recover_and_load_seconds": round(load_s, 3),
            "full_gc_seconds": round(gc_s, 3),
            "rss_base_mb": round(base / 1024, 1),
            "rss_after_load_mb": round(after_load / 1024, 1),
            "rss_hwm_mb": round(rss_kb("VmHWM") / 1024, 1),
            "rss_bytes_per_message": round((after_load - base) * 1024 / a.count),
            "queued": len(sched.queue),
            "unpacked": sched.queue.objects(),
        }
        if a.trace:
            now, peak = tracemalloc.get_traced_memory()
            out["traced_total_bytes_per_message"] = round(now / a.count)
            out["traced_peak_bytes_per_message"] = round(peak / a.count)
            top = tracemalloc.take_snapshot().statistics("lineno")[:12]
            out["traced_top"] = [f"{s.traceback[0]}: {s.size / a.count:.0f} B/msg" for s in top]
        return out
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


# -- serve (the real server) -------------------------------------------------------------------
class Server:
    def __init__(self, procs: run.Processes, work: Path, spool: Path) -> None:
        self.procs, self.work, self.spool = procs, work, spool
        self.port, self.primary = run.free_port(), run.free_port()
        self.cfg = write_config(work, spool, self.port, self.primary)
        self.log = work / f"twistd-{spool.name}.log"
        self.proc: subprocess.Popen[Any] | None = None
        self.env = dict(os.environ, PYTHONPATH=str(run.ROOT))

    def start(self) -> float:
        t0 = time.monotonic()
        seen = self.log.stat().st_size if self.log.exists() else 0  # an earlier start's lines
        with open(self.log, "ab") as log:
            self.proc = self.procs.popen(
                [TWISTD, "--nodaemon", "--pidfile=", "mxbackup", "--config", str(self.cfg)],
                stdout=log, stderr=subprocess.STDOUT, cwd=str(self.work), env=self.env,
            )  # fmt: skip
        while b"mxbackup ready" not in self.log.read_bytes()[seen:]:
            if self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text()[-800:])
            if time.monotonic() - t0 > 900:
                raise RuntimeError("not ready after 900 s")
            time.sleep(0.01)
        return time.monotonic() - t0

    def wait_for(self, line: bytes, since: int, limit: float = 900) -> float:
        """Seconds until ``line`` is in the log after octet ``since``."""
        t0 = time.monotonic()
        while line not in self.log.read_bytes()[since:]:
            if self.proc is None or self.proc.poll() is not None:
                raise RuntimeError(self.log.read_text()[-800:])
            if time.monotonic() - t0 > limit:
                raise RuntimeError(f"no {line!r} after {limit} s")
            time.sleep(0.01)
        return time.monotonic() - t0

    def wait_loaded(self, since: int) -> float:
        """Seconds until a queue read in the background is loaded (0: read before ready)."""
        if b"more being read" not in self.log.read_bytes()[since:]:
            return 0.0
        return self.wait_for(b"queue loaded", since)

    def send_one(self) -> tuple[float, str]:
        """One 5 KB message through smtplib: seconds from connecting to its 250, and its id."""
        import smtplib

        t = time.monotonic()
        with smtplib.SMTP("127.0.0.1", self.port, timeout=120) as c:
            c.ehlo("bench.test")
            c.mail(SENDER)
            c.rcpt(RCPT)
            body = b"Subject: during the load\r\n\r\n" + (b"x" * 78 + b"\r\n") * 64
            code, text = c.data(body)
        if code != 250:
            raise RuntimeError(f"DATA answered {code} {text!r}")
        return time.monotonic() - t, text.decode().rsplit(" ", 1)[-1]

    def pids(self) -> list[int]:
        return run.group_members(self.proc.pid) if self.proc else []

    def mem(self) -> dict[str, float]:
        return {
            k: round(sum(run.status_kb(p, k) or 0 for p in self.pids()) / 1024, 1)
            for k in ("VmRSS", "VmHWM")
        }

    def cpu(self) -> float:
        return sum(run.cpu_of(p) for p in self.pids())

    def cli(self, *args: str) -> float:
        t = time.monotonic()
        subprocess.run(
            [PY, "-m", "mxbackup.cli", *args, "--config", str(self.cfg)],
            env=self.env, stdout=subprocess.DEVNULL, check=True, timeout=900,
        )  # fmt: skip
        return time.monotonic() - t

    def accept(self, n: int) -> float:
        t = time.monotonic()
        subprocess.run(
            ["smtp-source", "-s", "10", "-m", str(n), "-l", "5120", "-f", SENDER, "-t", RCPT,
             f"127.0.0.1:{self.port}"], check=True, timeout=900,
        )  # fmt: skip
        return n / (time.monotonic() - t)

    def stop(self, grace: float = 30) -> None:
        if self.proc is not None:
            self.procs.kill(self.proc, grace=grace)
            self.proc = None


class StallProbe(threading.Thread):
    """One SMTP connection sending NOOP every 5 ms: the worst round trip = the reactor's
    longest stall while it runs."""

    def __init__(self, port: int) -> None:
        super().__init__(daemon=True)
        self.port, self.worst, self.stop = port, 0.0, threading.Event()

    def run(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port)) as s:
            f = s.makefile("rb")
            f.readline()
            while not self.stop.is_set():
                t = time.monotonic()
                s.sendall(b"NOOP\r\n")
                f.readline()
                self.worst = max(self.worst, time.monotonic() - t)
                time.sleep(0.005)

    def during(self, fn: Any, *args: Any) -> tuple[float, float]:
        self.start()
        time.sleep(0.1)
        try:
            took = fn(*args)
        finally:
            self.stop.set()
            self.join(5)
        return took, self.worst


@contextlib.contextmanager
def on_spool(a: argparse.Namespace, **out: Any) -> Iterator[tuple[run.Processes, Server, dict]]:
    """A work directory, the spool (generated, or ``--spool`` reused) and a server on it (not
    started), with the results so far; every process stopped and the work directory removed
    after (unless ``--keep``)."""
    work = Path(tempfile.mkdtemp(prefix="million-", dir=a.workdir))
    procs = run.Processes()
    try:
        spool = Path(a.spool) if a.spool else work / "spool"
        out = {"count": a.count, **out, "generate": generate(spool, a.count)}
        yield procs, Server(procs, work, spool), out
    finally:
        procs.cleanup()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


def start_sink(procs: run.Processes, port: int) -> Any:
    """``smtp-sink`` as the primary on ``port`` (as nobody: it refuses root)."""
    user = ["-u", "nobody"] if os.geteuid() == 0 else []
    return procs.popen(["smtp-sink", *user, f"127.0.0.1:{port}", "1000"])


def serve(a: argparse.Namespace) -> dict[str, Any]:
    from mxbackup.ops.talk import request

    with on_spool(a) as (procs, srv, out):
        out["ready_seconds"] = round(srv.start(), 2)
        # a big queue is read while the server accepts mail: measured once it is all read
        out["loaded_seconds"] = round(out["ready_seconds"] + srv.wait_loaded(0), 2)
        time.sleep(2)
        out["mem_mb"] = srv.mem()
        c0, t0 = srv.cpu(), time.monotonic()
        time.sleep(a.idle)
        out["idle_cpu_ms_per_s"] = round((srv.cpu() - c0) * 1000 / (time.monotonic() - t0), 2)
        sock = str(srv.spool / "control.sock")
        t = time.monotonic()
        request(sock, "stats", timeout=600)
        out["stats_seconds"] = round(time.monotonic() - t, 3)
        took, stall = StallProbe(srv.port).during(srv.cli, "queue", "list")
        out["queue_list_seconds"], out["queue_list_worst_stall_ms"] = round(took, 2), stall * 1e3
        # a selection by sender reads every envelope (unpacking the packed ones)
        took, stall = StallProbe(srv.port).during(
            srv.cli, "queue", "list", "--sender", "nobody@nowhere.test"
        )
        out["queue_list_sender_seconds"] = round(took, 2)
        out["queue_list_sender_worst_stall_ms"] = round(stall * 1e3, 1)
        if a.all:
            took, stall = StallProbe(srv.port).during(srv.cli, "queue", "list", "--all")
            out["queue_list_all_seconds"] = round(took, 2)
            out["queue_list_all_worst_stall_ms"] = round(stall * 1e3, 1)
        out["mem_after_list_mb"] = srv.mem()
        if a.accept:
            out["accept_full_msg_s"] = round(srv.accept(a.accept), 1)
        if a.drain:
            out["drain"] = drain(procs, srv, a.drain)
        srv.stop()
        if a.accept:
            empty = Server(procs, srv.work, srv.work / "empty")
            empty.start()
            out["accept_empty_msg_s"] = round(empty.accept(a.accept), 1)
            empty.stop()
            out["accept_ratio"] = round(out["accept_full_msg_s"] / out["accept_empty_msg_s"], 2)
        return out


def accept(a: argparse.Namespace) -> dict[str, Any]:
    """Acceptance with the big queue loaded against an empty server, in ``--rounds`` turns
    (full, empty, full, ...): the other server is stopped (SIGSTOP) while one is measured,
    so the VM's drift over minutes and the full server's own work (tries at the down
    primary) do not land on one side."""
    with on_spool(a) as (procs, full, out):
        out["ready_seconds"] = round(full.start(), 2)
        out["loaded_seconds"] = round(out["ready_seconds"] + full.wait_loaded(0), 2)
        if a.paused:  # delivery stopped: no tries at the down primary meanwhile
            full.cli("pause")
        empty = Server(procs, full.work, full.work / "empty")
        empty.start()
        rates: dict[str, list[float]] = {"full": [], "empty": []}
        for _ in range(a.rounds):
            for name, this, other in (("full", full, empty), ("empty", empty, full)):
                assert other.proc is not None
                os.killpg(other.proc.pid, signal.SIGSTOP)
                try:
                    time.sleep(0.5)
                    rates[name].append(round(this.accept(a.messages), 1))
                finally:
                    os.killpg(other.proc.pid, signal.SIGCONT)
        out["accept_full_msg_s"], out["accept_empty_msg_s"] = rates["full"], rates["empty"]
        medians = {k: sorted(v)[len(v) // 2] for k, v in rates.items()}
        out["accept_ratio_of_medians"] = round(medians["full"] / medians["empty"], 2)
        out["accept_ratios"] = [round(f / e, 2) for f, e in zip(*rates.values(), strict=True)]
        out["mem_mb"] = full.mem()
        if a.paused:
            full.cli("resume")  # (pause survives a restart)
        empty.stop()
        full.stop()  # a clean stop (its snapshot): the clean-up's kill allows only 3 s
        return out


def restart(a: argparse.Namespace) -> dict[str, Any]:
    """Start-up reading every envelope file, a clean stop (which leaves the snapshot), then
    start-up from the snapshot; with ``--cold`` the page cache is dropped before each start
    (as after a reboot: needs root)."""
    with on_spool(a, cold=a.cold) as (procs, srv, out):
        (srv.spool / "snapshot").unlink(missing_ok=True)
        for start in ("files", "snapshot"):
            if a.cold:
                os.sync()
                Path("/proc/sys/vm/drop_caches").write_text("3\n")
            since = srv.log.stat().st_size if srv.log.exists() else 0
            out[f"ready_{start}_seconds"] = ready = round(srv.start(), 2)
            probe = StallProbe(srv.port)  # the reactor's worst stall while the queue loads
            probe.start()
            took, qid = srv.send_one()
            out[f"first_250_{start}_seconds"] = round(took, 3)
            loaded = srv.wait_loaded(since)  # 0 where the queue is read before listening
            out[f"loaded_{start}_seconds"] = round(ready + took + loaded, 2)
            out[f"worst_noop_during_load_{start}_ms"] = round(probe.worst * 1000, 1)
            # and over the same window after ready for either code (the tries of messages
            # falling due, the first ticks: what a load in the background is compared with)
            time.sleep(max(0.0, a.window - took - loaded))
            probe.stop.set()
            probe.join(5)
            out[f"worst_noop_{a.window:.0f}s_after_ready_{start}_ms"] = round(probe.worst * 1e3, 1)
            srv.cli("queue", "delete", qid)  # the spool holds the count it was made with
            time.sleep(2)
            out[f"mem_{start}_mb"] = srv.mem()
            t = time.monotonic()
            srv.stop(grace=300)
            out[f"stop_after_{start}_seconds"] = round(time.monotonic() - t, 2)
            with contextlib.suppress(FileNotFoundError):
                out[f"snapshot_after_{start}_mb"] = round(
                    (srv.spool / "snapshot").stat().st_size / 2**20, 1
                )
        lines = srv.log.read_text().splitlines()
        out["log"] = [line.split("] ", 1)[-1] for line in lines if "snapshot" in line]
        return out


def comeback(a: argparse.Namespace) -> dict[str, Any]:
    """A start-up with the primary up (``smtp-sink`` listening first): seconds to ready, to
    the first delivery and to the queue being loaded (a big queue is read while the server
    accepts and delivers), and how many were delivered by then; the server is stopped then.
    It delivers from the spool: pass its new count next time."""
    with on_spool(a) as (procs, srv, out):
        start_sink(procs, srv.primary)
        t0 = time.monotonic()
        out["ready_seconds"] = round(srv.start(), 2)
        delivered = b"outcome=delivered"
        srv.wait_for(delivered, 0)
        out["first_delivery_seconds"] = round(time.monotonic() - t0, 2)
        loaded = srv.wait_loaded(0)
        out["loaded_seconds"] = round(time.monotonic() - t0, 2) if loaded else None
        out["delivered_when_loaded"] = srv.log.read_bytes().count(delivered)
        srv.stop()
        return out


def drain(procs: run.Processes, srv: Server, seconds: float) -> dict[str, Any]:
    from mxbackup.ops.talk import request

    sock = str(srv.spool / "control.sock")

    def queued() -> int:  # O(1) in the server; a listdir of a million took a core here
        return int(request(sock, "count"))

    before = queued()
    sink = start_sink(procs, srv.primary)
    cpu0, roles0 = srv.cpu(), cpu_by_role(srv)
    try:
        t0 = time.monotonic()
        first = None
        while time.monotonic() - t0 < seconds:
            left = queued()
            if first is None and left < before:
                first = (time.monotonic(), left)
            if not left:
                break
            time.sleep(0.02)  # a 2,000 queue drains in about a second
        t1, left = time.monotonic(), queued()
        if not left:  # the removals of the last deliveries, answered after the count fell
            time.sleep(1.0)
        cpu1, roles1 = srv.cpu(), cpu_by_role(srv)
    finally:
        procs.kill(sink)
    rate = None
    if first is not None and t1 > first[0]:
        rate = round((first[1] - left) / (t1 - first[0]), 1)
    delivered = before - left
    return {
        "delivered": delivered,
        "seconds": round(t1 - t0, 1),
        "first_delivery_s": round(first[0] - t0, 2) if first else None,
        "msg_per_s_after_first": rate,
        # as bench/run.py's "whole" row: from the primary's return, detection included
        "msg_per_s_whole": round(delivered / (t1 - t0), 1) if t1 > t0 else None,
        # all the server's work for them (twistd and spool process, from the primary's
        # return): unlike the rate's window, it does not leave out the set-up before the
        # first delivery nor the removals after the last
        "server_cpu_ms_per_msg": round((cpu1 - cpu0) * 1e3 / delivered, 3) if delivered else None,
        "cpu_ms_per_msg_by_process": {
            role: round((cpu - roles0.get(role, 0.0)) * 1e3 / delivered, 3)
            for role, cpu in roles1.items()
        }
        if delivered
        else None,
    }


def cpu_by_role(srv: Server) -> dict[str, float]:
    """CPU seconds so far of twistd, the spool process and the prefetch process."""
    out: dict[str, float] = {}
    for pid in srv.pids():
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        for role, mark in (
            ("spool", b"spoolchild"),
            ("prefetch", b"prefetchchild"),
            ("twistd", b"twistd"),
        ):
            if mark in cmd:
                out[role] = out.get(role, 0.0) + run.cpu_of(pid)
                break
    return out


def drain_only(a: argparse.Namespace) -> dict[str, Any]:
    """Start-up, the whole queue read, then ``--seconds`` of draining to ``smtp-sink``
    (``drain``), and a clean stop (its snapshot).  It delivers from the spool: pass its new
    count next time."""
    with on_spool(a) as (procs, srv, out):
        out["ready_seconds"] = round(srv.start(), 2)
        out["loaded_seconds"] = round(out["ready_seconds"] + srv.wait_loaded(0), 2)
        time.sleep(2)
        out["drain"] = drain(procs, srv, a.seconds)
        srv.stop()
        return out


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    for name in ("memory", "serve", "restart", "comeback", "accept", "drain"):
        s = sub.add_parser(name)
        s.add_argument("--count", type=int, default=100_000)
        s.add_argument("--workdir", default="/var/tmp")
        s.add_argument("--keep", action="store_true")
        s.add_argument("--spool", help="generate into (or reuse) this spool, kept")
    sub.choices["memory"].add_argument("--trace", action="store_true")
    s = sub.choices["serve"]
    s.add_argument("--idle", type=float, default=10.0, help="seconds of idle CPU sampling")
    s.add_argument("--all", action="store_true", help="also time queue list --all")
    s.add_argument("--accept", type=int, default=0, help="messages for the acceptance runs")
    s.add_argument("--drain", type=float, default=0.0, help="seconds of draining to measure")
    sub.choices["drain"].add_argument("--seconds", type=float, default=20.0)
    s = sub.choices["accept"]
    s.add_argument("--rounds", type=int, default=5, help="turns of full and empty")
    s.add_argument("--messages", type=int, default=5000, help="messages per turn")
    s.add_argument("--paused", action="store_true", help="delivery paused on the full one")
    sub.choices["restart"].add_argument("--cold", action="store_true", help="drop caches first")
    sub.choices["restart"].add_argument(
        "--window", type=float, default=20.0, help="seconds after ready the NOOP probe runs"
    )
    a = p.parse_args(argv)
    with contextlib.suppress(BrokenPipeError):
        commands = {"memory": memory, "serve": serve, "restart": restart, "comeback": comeback,
                    "accept": accept, "drain": drain_only}  # fmt: skip
        json.dump(commands[a.cmd](a), sys.stdout, indent=1)
        print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
