"""Scale helpers for the benchmark (run with the project's venv, PYTHONPATH=<repo>).

    python bench/scale.py generate --spool DIR --count N --route example.com --rcpt user@example.com
    python bench/scale.py tick --config FILE --counts 1000,100000 [--reps 5]

``generate`` writes N queued messages straight into a spool directory, in the format the
server itself writes: ``new/<id>`` (the message, CRLF) and ``env/<id>`` (the JSON of
``mxbackup.queue.envelope.Envelope.to_json()``, ids from ``new_queue_id``).  The messages look like
mail deferred once because the primary is down: one attempt made, next attempt in the future,
so a server started on this spool has nothing due.

``tick`` measures ``Scheduler.tick()`` in-process with a ``twisted.internet.task.Clock``:
with nothing due, and with exactly 100 messages falling due, for each queue size.  Disk I/O
is stubbed out (the spool's worker-thread calls return Deferreds that never fire), so only the
scheduler's own work is timed.  Prints one JSON object on stdout.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from mxbackup import config as config_module
from mxbackup.outbound.scheduler import Scheduler
from mxbackup.queue.envelope import Envelope, Recipient, new_queue_id
from mxbackup.queue.spool import SUBDIRS, Spool

MESSAGE_BODY_LINES = 12


def make_message(qid: str, sender: str, rcpt: str, when: float) -> bytes:
    date = time.strftime("%a, %d %b %Y %H:%M:%S +0000", time.gmtime(when))
    lines = [
        f"Received: from bench.test (localhost [127.0.0.1]) by mx2.example.net with ESMTP id {qid};"
        f" {date}",
        f"From: <{sender}>",
        f"To: <{rcpt}>",
        f"Subject: bench {qid}",
        f"Date: {date}",
        f"Message-ID: <{qid}@bench.test>",
        "",
    ]
    lines += ["benchmark message body line, queued while the primary is down"] * MESSAGE_BODY_LINES
    return ("\r\n".join(lines) + "\r\n").encode()


def make_envelope(
    qid: str, sender: str, rcpt: str, route: str, received_at: float, next_attempt: float, size: int
) -> Envelope:
    return Envelope(
        id=qid,
        sender=sender,
        recipients=[
            Recipient(
                address=rcpt,
                route=route,
                state="pending",
                attempts=1,
                next_attempt=next_attempt,
                last_reply="4.4.1 target is down: connection refused",
            )
        ],
        received_at=received_at,
        size=size,
        client_ip="127.0.0.1",
        helo="bench.test",
        params={},
    )


def unique_ids(count: int, start: float) -> list[str]:
    """``new_queue_id`` values, distinct and sorted, spread one µs apart from ``start``."""
    ids: list[str] = []
    seen: set[str] = set()
    t = start
    while len(ids) < count:
        qid = new_queue_id(t)
        t += 0.000001
        if qid not in seen:
            seen.add(qid)
            ids.append(qid)
    return ids


def generate(
    spool: str, count: int, route: str, rcpt: str, sender: str, due_in: float = 900.0
) -> dict[str, Any]:
    """Next attempts spread over [due_in, 2 * due_in) seconds from now: none due at start-up."""
    t0 = time.monotonic()
    for sub in SUBDIRS:
        os.makedirs(os.path.join(spool, sub), mode=0o700, exist_ok=True)
    now = time.time()
    received = now - 600.0
    total = 0
    for i, qid in enumerate(unique_ids(count, received)):
        data = make_message(qid, sender, rcpt, received)
        when = now + due_in + (i % int(due_in))
        env = make_envelope(qid, sender, rcpt, route, received, when, len(data))
        with open(os.path.join(spool, "new", qid), "wb") as f:
            f.write(data)
        with open(os.path.join(spool, "env", qid), "wb") as f:
            f.write(env.to_json())
        total += len(data)
    os.sync()  # on disk, like a real queue (the page cache stays warm: see README)
    return {"count": count, "bytes": total, "seconds": round(time.monotonic() - t0, 3)}


_KEPT: list[Any] = []


def _never(*_a: Any, **_k: Any) -> defer.Deferred:
    d: defer.Deferred = defer.Deferred()  # work that never completes: the tick is timed alone
    _KEPT.append(d)  # never collected either (a collected connection runs its clean-up)
    return d


class _NeverNextHop:
    """Stands in for NextHop: every look-up (for_route, for_domain...) never completes."""

    def __getattr__(self, name: str) -> Any:
        return _never


def tick_bench(config_path: str, count: int, reps: int, idle_ticks: int) -> dict[str, Any]:
    config = config_module.load(config_path)
    route = config.routes[0].domain
    clock = Clock()
    base = 1_000_000.0
    clock.advance(base)
    # No round ever runs (``_never``); the try log, appended before each connection, goes
    # to a directory of its own.
    spool = Spool(tempfile.mkdtemp(prefix="mxbench-tick-"), runner=_never, clock=clock.seconds)
    scheduler = Scheduler(
        config,
        spool,
        clock=clock,
        nexthop=_NeverNextHop(),
        deliver=_never,  # type: ignore[arg-type]
    )
    ids = unique_ids(count, base - 600.0)
    envelopes = [
        # message i falls due at base + 1000 + i: exactly 100 more fall due per 100 s
        make_envelope(
            qid,
            "bench@sender.test",
            "user@example.com",
            route,
            base - 600.0,
            base + 1000.0 + i,
            500,
        )
        for i, qid in enumerate(ids)
    ]
    gc.collect()
    t = time.perf_counter()
    scheduler.load(envelopes)
    load_s = time.perf_counter() - t
    del envelopes
    gc.collect()
    idle = []
    for _ in range(idle_ticks):
        t = time.perf_counter_ns()
        scheduler.tick()
        idle.append(time.perf_counter_ns() - t)
    due = []
    reps = max(1, min(reps, count // 100))
    for k in range(reps):
        clock.advance(base + 1000.0 + 100 * (k + 1) - 0.5 - clock.seconds())
        t = time.perf_counter_ns()
        scheduler.tick()
        due.append(time.perf_counter_ns() - t)
    idle_sorted = sorted(idle)
    inflight = len(scheduler.backlog.inflight)  # taken by the due ticks, never finished
    spool.try_log.close()
    shutil.rmtree(spool.root, ignore_errors=True)
    return {
        "taken_after_due_ticks": inflight,
        "queued": count,
        "load_seconds": round(load_s, 4),
        "idle_tick_us_median": round(statistics.median(idle) / 1000, 2),
        "idle_tick_us_p99": round(idle_sorted[min(len(idle) - 1, int(len(idle) * 0.99))] / 1000, 2),
        "idle_ticks": idle_ticks,
        "due100_tick_us_median": round(statistics.median(due) / 1000, 2),
        "due100_tick_us_min": round(min(due) / 1000, 2),
        "due100_tick_us_max": round(max(due) / 1000, 2),
        "due100_reps": reps,
    }


def _watch_failures() -> list[str]:
    """Scheduler.tick() logs and swallows its exceptions: collect them so a broken tick is
    reported instead of being timed as a fast one."""
    from twisted.logger import LogLevel, formatEvent, globalLogBeginner

    failures: list[str] = []

    def observer(event: dict[str, Any]) -> None:
        if "log_failure" in event or event.get("log_level") in (LogLevel.error, LogLevel.critical):
            text = formatEvent(event)
            if "log_failure" in event:
                text += ": " + event["log_failure"].getErrorMessage()
            failures.append(text)

    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)
    return failures


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    g = sub.add_parser("generate")
    g.add_argument("--spool", required=True)
    g.add_argument("--count", type=int, required=True)
    g.add_argument("--route", default="example.com")
    g.add_argument("--rcpt", default="user@example.com")
    g.add_argument("--sender", default="bench@sender.test")
    t = sub.add_parser("tick")
    t.add_argument("--config", required=True)
    t.add_argument("--counts", required=True)
    t.add_argument("--reps", type=int, default=5)
    t.add_argument("--idle-ticks", type=int, default=200)
    a = p.parse_args(argv)
    if a.cmd == "generate":
        out: Any = generate(a.spool, a.count, a.route, a.rcpt, a.sender)
    else:
        failures = _watch_failures()
        out = {
            str(n): tick_bench(a.config, n, a.reps, a.idle_ticks)
            for n in (int(x) for x in a.counts.split(","))
        }
        out["errors"] = failures[:20]
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
