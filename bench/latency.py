"""Latency client: time from sending the end of DATA ("\\r\\n.\\r\\n") to receiving the 250.

    python bench/latency.py --port 2525 --concurrency 50 --count 2000 --size 5120

Opens ``concurrency`` connections (TCP_NODELAY), waits until all have had their EHLO reply,
then each sends its share of ``count`` messages one transaction after the other on the same
connection (MAIL, RCPT, DATA, body, end of data).  Only the end-of-data -> 250 interval is
timed.  Prints one JSON object (milliseconds) on stdout.  Standard library only.

Without ``--rate`` the clients are closed-loop: each sends its next message as soon as the
last one is answered, so a faster server is offered more and its clients queue behind each
other on it.  With ``--rate R`` (messages per second, all connections together) the
transactions start on a fixed schedule, spread evenly over the connections: both servers are
offered the same load, and the latency is the server's own at that load.  A transaction whose
start time has passed starts at once; ``behind_schedule`` counts those more than 10 ms late
(the server could not keep up).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import sys
import time


class SMTPError(Exception):
    pass


async def read_reply(reader: asyncio.StreamReader) -> tuple[int, str]:
    lines = []
    while True:
        line = await reader.readline()
        if not line:
            raise SMTPError("connection closed by the server")
        lines.append(line.decode("latin-1").rstrip("\r\n"))
        if len(line) < 4 or line[3:4] != b"-":
            break
    try:
        code = int(lines[-1][:3])
    except ValueError:
        raise SMTPError(f"bad reply {lines!r}") from None
    return code, "\n".join(lines)


async def expect(reader: asyncio.StreamReader, ok: tuple[int, ...], what: str) -> None:
    code, text = await read_reply(reader)
    if code not in ok:
        raise SMTPError(f"{what}: {text}")


def make_body(size: int) -> bytes:
    """About ``size`` bytes of message (headers + body), CRLF lines, without the final CRLF."""
    head = (
        "From: <bench@sender.test>\r\nTo: <user@example.com>\r\nSubject: latency\r\n"
        "Message-ID: <latency@bench.test>\r\n\r\n"
    )
    line = "x" * 76 + "\r\n"
    body = head + line * max(1, (size - len(head)) // len(line))
    return body.rstrip("\r\n").encode()


async def session(
    host: str,
    port: int,
    count: int,
    body: bytes,
    rcpt: str,
    sender: str,
    start: asyncio.Event,
    ready: list[int],
    latencies: list[float],
    errors: list[str],
    timeout: float,
    pace: tuple[float, float] | None = None,
    behind: list[int] | None = None,
) -> None:
    """One connection's transactions; with ``pace`` (offset, step in seconds) the i-th starts
    at offset + i * step after the common start (every session wakes in the same loop turn)."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    except (TimeoutError, OSError) as e:
        errors.append(f"connect: {e!r}")
        ready.append(1)
        return
    sock = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        await asyncio.wait_for(expect(reader, (220,), "greeting"), timeout)
        writer.write(b"EHLO bench.test\r\n")
        await asyncio.wait_for(expect(reader, (250,), "EHLO"), timeout)
        ready.append(1)
        await start.wait()
        loop = asyncio.get_running_loop()
        started = loop.time()
        for i in range(count):
            if pace is not None:
                wait = started + pace[0] + i * pace[1] - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                elif wait < -0.01 and behind is not None:  # more than 10 ms late
                    behind.append(1)
            writer.write(f"MAIL FROM:<{sender}>\r\n".encode())
            await asyncio.wait_for(expect(reader, (250,), "MAIL"), timeout)
            writer.write(f"RCPT TO:<{rcpt}>\r\n".encode())
            await asyncio.wait_for(expect(reader, (250,), "RCPT"), timeout)
            writer.write(b"DATA\r\n")
            await asyncio.wait_for(expect(reader, (354,), "DATA"), timeout)
            writer.write(body)
            await writer.drain()
            t0 = time.perf_counter()
            writer.write(b"\r\n.\r\n")
            code, text = await asyncio.wait_for(read_reply(reader), timeout)
            t1 = time.perf_counter()
            if code != 250:
                raise SMTPError(f"end of data: {text}")
            latencies.append((t1 - t0) * 1000.0)
        writer.write(b"QUIT\r\n")
        await asyncio.wait_for(read_reply(reader), timeout)
    except (TimeoutError, OSError, SMTPError) as e:
        errors.append(repr(e))
        ready.append(1)
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass


def percentile(sorted_values: list[float], p: float) -> float:
    if not sorted_values:
        return float("nan")
    k = (len(sorted_values) - 1) * p / 100.0
    lo = int(k)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo)


async def run(args: argparse.Namespace) -> dict[str, object]:
    body = make_body(args.size)
    start = asyncio.Event()
    ready: list[int] = []
    latencies: list[float] = []
    errors: list[str] = []
    behind: list[int] = []
    c = args.concurrency
    shares = [args.count // c + (1 if i < args.count % c else 0) for i in range(c)]
    # paced: connection k's i-th transaction starts at (k + i*c) / rate after the start
    paces = [(k / args.rate, c / args.rate) if args.rate else None for k in range(c)]
    tasks = [
        asyncio.create_task(
            session(
                args.host,
                args.port,
                n,
                body,
                args.rcpt,
                args.sender,
                start,
                ready,
                latencies,
                errors,
                args.timeout,
                paces[k],
                behind,
            )
        )
        for k, n in enumerate(shares)
    ]
    deadline = time.monotonic() + args.timeout
    while len(ready) < c and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    t0 = time.perf_counter()
    start.set()
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    s = sorted(latencies)
    return {
        "concurrency": c,
        "offered_msgs_per_sec": args.rate or None,
        "behind_schedule": len(behind),
        "messages": len(s),
        "requested": args.count,
        "size": len(body) + 2,
        "wall_seconds": round(wall, 3),
        "msgs_per_sec": round(len(s) / wall, 1) if wall > 0 else None,
        "p50_ms": round(percentile(s, 50), 3),
        "p90_ms": round(percentile(s, 90), 3),
        "p99_ms": round(percentile(s, 99), 3),
        "max_ms": round(s[-1], 3) if s else None,
        "mean_ms": round(statistics.fmean(s), 3) if s else None,
        "errors": errors[:10],
        "error_count": len(errors),
    }


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--concurrency", type=int, default=50)
    p.add_argument("--count", type=int, default=2000)
    p.add_argument("--size", type=int, default=5120)
    p.add_argument("--rcpt", default="user@example.com")
    p.add_argument("--sender", default="bench@sender.test")
    p.add_argument("--timeout", type=float, default=60.0)
    p.add_argument(
        "--rate", type=float, default=0.0, help="offered msg/s, all connections (0: closed loop)"
    )
    args = p.parse_args(argv)
    out = asyncio.run(run(args))
    json.dump(out, sys.stdout)
    sys.stdout.write("\n")
    return 0 if not out["error_count"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
