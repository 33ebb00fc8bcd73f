"""AUTH failure timing: does a wrong password for an existing account take as long as any
password for a name that does not exist?  (Issue 16: with the old fixed-cost dummy hash, an
account hashed at cost 10 answered in ~60 ms, an unknown name in ~240 ms.)

    python bench/auth_timing.py --port 2525 --user relay-user --count 40

against a server with TLS and that account.  Each round opens one connection, does STARTTLS,
and times ``AUTH PLAIN`` (send to reply) for the account with a wrong password and for an
unknown name, alternating which goes first.  Connections come from 127.0.0.2, .3, ... in turn,
8 failures per address, so the failed-AUTH limit (10 per client by default) never answers
for bcrypt (a second run within 10 minutes: ``--first-source 100``).  Prints one JSON
object: medians and means in ms, and the relative difference.  Standard library only;
loopback only.
"""

from __future__ import annotations

import argparse
import base64
import json
import smtplib
import ssl
import statistics
import time


def timed_auth(port: int, source: str, user: str) -> float:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    with smtplib.SMTP("127.0.0.1", port, source_address=(source, 0), timeout=30) as smtp:
        smtp.starttls(context=context)
        smtp.ehlo("bench.test")
        line = "AUTH PLAIN " + base64.b64encode(f"\0{user}\0wrong-password".encode()).decode()
        start = time.perf_counter()
        code, _ = smtp.docmd(line)
        elapsed = time.perf_counter() - start
    if code != 535:
        raise SystemExit(f"unexpected AUTH reply {code} (is the limit answering?)")
    return elapsed * 1000


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--user", default="relay-user")
    parser.add_argument("--count", type=int, default=40)
    parser.add_argument("--first-source", type=int, default=2, help="127.0.0.N to start at")
    args = parser.parse_args()
    known: list[float] = []
    unknown: list[float] = []
    for i in range(args.count):
        source = f"127.0.0.{args.first_source + i // 4}"  # 2 failures a round, 8 an address
        pair = [(known, args.user), (unknown, f"nobody-{i}")]
        for results, user in pair if i % 2 else reversed(pair):
            results.append(timed_auth(args.port, source, user))
    k, u = statistics.median(known), statistics.median(unknown)
    print(
        json.dumps(
            {
                "count": args.count,
                "known_median_ms": round(k, 1),
                "unknown_median_ms": round(u, 1),
                "known_mean_ms": round(statistics.fmean(known), 1),
                "unknown_mean_ms": round(statistics.fmean(unknown), 1),
                "difference_percent": round(abs(u - k) / min(u, k) * 100, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
