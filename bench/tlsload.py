"""STARTTLS load generator (standard library only): real STARTTLS, one message per connection.

    python3 bench/tlsload.py --port PORT [--host 127.0.0.1] [--concurrency 10] [--messages 1000]
        [--size 5120] [--resume] [--procs 2] [--from a@b] [--to c@d]

Each connection: banner, EHLO, STARTTLS, the TLS handshake, EHLO again, MAIL, RCPT, DATA, the
message, QUIT.  Without ``--resume`` every handshake is a full one (a new TLS session per
connection: key exchange and the server's certificate signature each time); with it, each
worker offers the session of its previous connection (TLS 1.3 or 1.2 ticket, or session id),
as a sending MTA with a session cache does, and the share of handshakes that were resumed is
reported.  The certificate is not verified (the bench's is self-signed).

The load is spread over ``--procs`` processes (default: the number of CPUs) of
``concurrency / procs`` threads each, blocking sockets (OpenSSL releases the GIL during the
handshake): the generator's own CPU is measured (``RUSAGE_CHILDREN`` of the workers) and
reported as a share of the machine's CPU over the run, so one can check that it is not the
bottleneck.  Also the time from the end of DATA (the final ``.``) to the 250, per message:
p50, p99.  Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import socket
import ssl
import statistics
import sys
import threading
import time
from typing import Any


class Failed(Exception):
    pass


def _reply(f: Any) -> tuple[int, bytes]:
    """One (possibly multi-line) reply: (code, last line)."""
    while True:
        line = f.readline()
        if len(line) < 4:
            raise Failed(f"connection closed or bad reply {line!r}")
        if line[3:4] != b"-":
            return int(line[:3]), line


def _expect(f: Any, code: int) -> None:
    got, line = _reply(f)
    if got != code:
        raise Failed(f"expected {code}, got {line!r}")


class Worker(threading.Thread):
    def __init__(self, a: argparse.Namespace, count: int, ctx: ssl.SSLContext) -> None:
        super().__init__(daemon=True)
        self.a, self.count, self.ctx = a, count, ctx
        self.latencies: list[float] = []
        self.resumed = self.errors = 0
        self.first_error = ""
        self.session: ssl.SSLSession | None = None
        self.body = _body(a.size)

    def run(self) -> None:
        for _ in range(self.count):
            try:
                self.one()
            except (OSError, Failed, ValueError) as e:
                self.errors += 1
                self.first_error = self.first_error or f"{type(e).__name__}: {e}"

    def one(self) -> None:
        a = self.a
        with socket.create_connection((a.host, a.port), timeout=60) as raw:
            raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            f = raw.makefile("rb")
            _expect(f, 220)
            raw.sendall(b"EHLO tlsload.test\r\n")
            _expect(f, 250)
            raw.sendall(b"STARTTLS\r\n")
            _expect(f, 220)
            session = self.session if a.resume else None
            with self.ctx.wrap_socket(raw, server_hostname="mx.test", session=session) as s:
                self.resumed += s.session_reused
                t = s.makefile("rb")
                s.sendall(b"EHLO tlsload.test\r\n")
                _expect(t, 250)
                s.sendall(f"MAIL FROM:<{a.sender}>\r\n".encode())
                _expect(t, 250)
                s.sendall(f"RCPT TO:<{a.rcpt}>\r\n".encode())
                _expect(t, 250)
                s.sendall(b"DATA\r\n")
                _expect(t, 354)
                s.sendall(self.body)
                t0 = time.perf_counter()
                s.sendall(b".\r\n")
                _expect(t, 250)
                self.latencies.append(time.perf_counter() - t0)
                s.sendall(b"QUIT\r\n")
                _reply(t)
                # TLS 1.3 tickets arrive after the handshake: read by now, so s.session has one
                self.session = s.session


def _body(size: int) -> bytes:
    head = b"From: <bench@sender.test>\r\nTo: <user@example.com>\r\nSubject: tlsload\r\n\r\n"
    line = b"x" * 76 + b"\r\n"
    return head + line * max(1, (size - len(head)) // len(line))


def _process(a: argparse.Namespace, threads: int, count: int, q: Any) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    if a.tls12:
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    shares = [count // threads + (i < count % threads) for i in range(threads)]
    workers = [Worker(a, n, ctx) for n in shares if n]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    q.put(
        {
            "latencies": [x for w in workers for x in w.latencies],
            "resumed": sum(w.resumed for w in workers),
            "errors": sum(w.errors for w in workers),
            "first_error": next((w.first_error for w in workers if w.first_error), ""),
        }
    )


def run(a: argparse.Namespace) -> dict[str, Any]:
    procs = max(1, min(a.procs or os.cpu_count() or 1, a.concurrency))
    threads = [a.concurrency // procs + (i < a.concurrency % procs) for i in range(procs)]
    counts = [a.messages * t // a.concurrency for t in threads]
    counts[0] += a.messages - sum(counts)
    q: Any = multiprocessing.get_context("fork").Queue()
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    ps = [
        multiprocessing.get_context("fork").Process(target=_process, args=(a, t, n, q))
        for t, n in zip(threads, counts, strict=True)
    ]
    for p in ps:
        p.start()
    results = [q.get() for _ in ps]
    for p in ps:
        p.join()
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    lat = sorted(x for r in results for x in r["latencies"])
    done = len(lat)
    out: dict[str, Any] = {
        "messages": done,
        "errors": sum(r["errors"] for r in results),
        "first_error": next((r["first_error"] for r in results if r["first_error"]), ""),
        "seconds": round(wall, 3),
        "msgs_per_sec": round(done / wall, 1) if wall else None,
        "resumed_share": round(sum(r["resumed"] for r in results) / done, 3) if done else None,
        "client_cpu_seconds": round(cpu, 3),
        "client_cpu_share": round(cpu / (wall * (os.cpu_count() or 1)), 3) if wall else None,
        "client_cpu_ms_per_msg": round(cpu * 1000 / done, 3) if done else None,
        "processes": procs,
        "concurrency": a.concurrency,
        "resume": a.resume,
    }
    if lat:
        out["latency_ms"] = {
            "p50": round(statistics.median(lat) * 1e3, 2),
            "p99": round(lat[min(done - 1, int(done * 0.99))] * 1e3, 2),
            "max": round(lat[-1] * 1e3, 2),
        }
    return out


def parse(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=10)
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--size", type=int, default=5120)
    p.add_argument("--resume", action="store_true", help="offer the previous session")
    p.add_argument("--tls12", action="store_true", help="TLS 1.2 at most")
    p.add_argument("--procs", type=int, default=0, help="worker processes (default: CPUs)")
    p.add_argument("--from", dest="sender", default="bench@sender.test")
    p.add_argument("--to", dest="rcpt", default="user@example.com")
    return p.parse_args(argv)


def main(argv: list[str]) -> int:
    out = run(parse(argv))
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 1 if out["errors"] and not out["messages"] else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
