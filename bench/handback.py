#!/usr/bin/env python3
"""Hand-back: the primary comes back, how soon is the queue with it?  (issue 14)

    python3 bench/handback.py [--messages 10000] [--limit 4] [--only mx,postfix,limited]
                              [--out bench/results/handback.json]

N messages of 5 KB are queued while the primary is down, each tried once (the server idle
again), then ``smtp-sink`` starts on the primary's port.  Measured: seconds from the sink
listening to the first message it receives, and to the whole queue delivered.

- ``mxbackup``: every delivery setting at its default (no ``delivery`` section).
- ``postfix-flush``: Postfix told ``postqueue -f`` at once (its best case).
- ``postfix-own``: Postfix left to its own queue run (its default case: queue_run_delay and
  minimal_backoff_time 300 s), timed out after ``--postfix-wait`` seconds.
- ``limited``: mxbackup at its defaults against a primary that limits itself: a proxy before
  smtp-sink takes ``--limit`` connections at once and answers ``421 4.7.0`` to any more
  (``--before PATH`` runs a second mxbackup tree, e.g. /work/main, for an A/B).

Runs as root, reusing bench/run.py's Postfix instance, servers and process handling.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402  (bench/run.py: the shared machinery)
from run import (  # noqa: E402
    HOST,
    SIZES,
    SMTP_SINK,
    Bench,
    BenchError,
    MXBackup,
    PostfixMX,
    Processes,
    count_files,
    wait_port,
)


class DefaultMX(MXBackup):
    """mxbackup with every delivery setting at its default; ``tree``: whose code runs."""

    def __init__(self, *args: Any, tree: Path | None = None, label: str = "mxbackup") -> None:
        super().__init__(*args)
        self.tree = tree
        self.name = label
        self.dir = self.dir.parent / label
        self.spool = self.dir / "spool"
        self.config = self.dir / "mx.yaml"
        self.log_path = self.dir / "twistd.log"

    def setup(self) -> None:
        super().setup()
        text = self.config.read_text()
        self.config.write_text(text[: text.index("delivery:")])  # the defaults

    def _env(self) -> dict[str, str]:
        env = super()._env()
        if self.tree is not None:
            env["PYTHONPATH"] = str(self.tree)
        return env


class Limiter:
    """A TCP proxy before smtp-sink: ``limit`` connections at once, 421 to the others."""

    def __init__(self, listen_port: int, sink_port: int, limit: int) -> None:
        self.listen_port, self.sink_port, self.limit = listen_port, sink_port, limit
        self.active = 0
        self.refused = 0
        self.accepted = 0
        self.most = 0
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.ready = threading.Event()

    def start(self) -> None:
        self.thread.start()
        self.ready.wait(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        server = self.loop.run_until_complete(
            asyncio.start_server(self._client, HOST, self.listen_port)
        )
        self.ready.set()
        self.loop.run_forever()
        server.close()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.active >= self.limit:
            self.refused += 1
            writer.write(b"421 4.7.0 too many connections from you, try again later\r\n")
            await writer.drain()
            writer.close()
            return
        self.active += 1
        self.accepted += 1
        self.most = max(self.most, self.active)
        try:
            up_r, up_w = await asyncio.open_connection(HOST, self.sink_port)
            await asyncio.gather(_pipe(reader, up_w), _pipe(up_r, writer))
        except OSError:
            pass
        finally:
            self.active -= 1
            writer.close()


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    except OSError:
        pass
    finally:
        try:
            writer.write_eof()
        except OSError:
            pass


def one(bench: Bench, server: Any, n: int, how: str, wait: float, limit: int = 0) -> dict[str, Any]:
    """Queue ``n`` with the primary down, then bring it up; time first and last delivery."""
    dump = bench.work / f"sink-{server.name}-{how}"
    if dump.exists():
        shutil.rmtree(dump)
    dump.mkdir()
    shutil.chown(dump, user="nobody")
    run.say(f"{server.name} ({how}): queueing {n} with the primary down")
    with bench.running(server):
        bench.smtp_source(10, n, SIZES["5KB"])
        bench.settle(server, max_wait=120 + n * 0.05)
        queued = server.queued()
        if queued != n:
            raise BenchError(f"{queued} of {n} queued")
        sink_port = run.free_port() if limit else bench.primary
        limiter = Limiter(bench.primary, sink_port, limit) if limit else None
        sink = bench.procs.popen(
            [str(SMTP_SINK), "-u", "nobody", "-d", f"{dump}/%M.", f"{HOST}:{sink_port}", "256"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            wait_port(sink_port, True, 30)
            if limiter is not None:
                limiter.start()
            t_up = wait_port(bench.primary, True, 30)
            if how == "flush":
                server.flush()
            t_first = t_all = None
            deadline = t_up + wait
            while time.monotonic() < deadline:
                now = time.monotonic()
                if t_first is None and run._any_file(dump):
                    t_first = now
                if t_first is not None and server.queued() == 0:
                    t_all = now
                    break
                time.sleep(0.01 if t_first is None else 0.05)
            delivered = count_files(dump)
        finally:
            if limiter is not None:
                limiter.stop()
            bench.procs.kill(sink, grace=2)
    res: dict[str, Any] = {
        "messages": n,
        "delivered": delivered,
        "first_delivery_seconds": round(t_first - t_up, 2) if t_first else None,
        "all_delivered_seconds": round(t_all - t_up, 2) if t_all else None,
    }
    if limiter is not None:
        res.update(limit=limit, refused_421=limiter.refused, sessions=limiter.accepted)
        res["most_at_once"] = limiter.most
    run.say(f"  {res}")
    return res


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=10000)
    ap.add_argument("--limit", type=int, default=4)
    ap.add_argument("--only", default="mx,postfix,limited")
    ap.add_argument("--postfix-wait", type=float, default=400.0)
    ap.add_argument("--before", type=Path, default=None, help="another tree, for an A/B")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "handback.json")
    args = ap.parse_args(argv)
    only = set(args.only.split(","))
    procs = Processes()
    work = Path(run.tempfile.mkdtemp(prefix="mxbackup-handback-", dir="/var/tmp"))
    work.chmod(0o755)
    results: dict[str, Any] = {"messages": args.messages, "size_bytes": SIZES["5KB"]}
    try:
        bench = Bench(argparse.Namespace(quick=True), procs, work)
        mx = DefaultMX(procs, work, bench.port, bench.primary)
        mx.setup()
        n = args.messages
        if "mx" in only:
            results["mxbackup_defaults"] = one(bench, mx, n, "defaults", 120 + n * 0.05)
        if "postfix" in only:
            postfix: PostfixMX = bench.postfix
            postfix.setup()
            time.sleep(31)  # ext4's 30 s after many deletions (bench/README.md, Deletions)
            results["postfix_flush"] = one(bench, postfix, n, "flush", 120 + n * 0.05)
            time.sleep(31)
            results["postfix_own_queue_run"] = one(bench, postfix, n, "own", args.postfix_wait)
        if "limited" in only:
            time.sleep(31)
            results["mxbackup_limited_primary"] = one(
                bench, mx, n, "limited", 300 + n * 0.1, limit=args.limit
            )
            if args.before is not None:
                before = DefaultMX(
                    procs, work, bench.port, bench.primary, tree=args.before, label="before"
                )
                before.setup()
                time.sleep(31)
                results["before_limited_primary"] = one(
                    bench, before, n, "limited", 300 + n * 0.1, limit=args.limit
                )
    finally:
        procs.cleanup()
        shutil.rmtree(work, ignore_errors=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
