"""The STARTTLS scenario of bench/run.py: both servers with the same RSA-2048 certificate,
``tlsload.py`` (real STARTTLS, one message per connection) at c = 10 and 50, a new TLS session
per connection and, separately, with session resumption; medians of the runs, min-max shown,
server CPU per message, and the load generator's own share of the machine's CPU.  Then both
again with an ECDSA P-256 certificate offered beside the RSA one (Postfix:
``smtpd_tls_eccert_file``; mxbackup: ``server.tls.extra_certificate``), new sessions only (a
resumed session signs nothing): the client, like most, prefers ECDSA.

Postfix gets its usual TLS settings: ``smtpd_tls_security_level = may`` with the certificate,
and its session cache on (``smtpd_tls_session_cache_database``, served by ``tlsmgr``; session
tickets are on by default since 2.11).  mxbackup gets ``server.tls`` with the same files
(tickets and its session cache are always on).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
CONCURRENCIES = (10, 50)
MODES = ("new", "resumed")

POSTFIX_MAIN = """\
smtpd_tls_cert_file = {cert}
smtpd_tls_key_file = {key}
smtpd_tls_security_level = may
smtpd_tls_session_cache_database = btree:${{data_directory}}/smtpd_scache
"""
POSTFIX_MASTER = "tlsmgr    unix  -       -       n       1000?   1       tlsmgr\n"
MXBACKUP_TLS = """\
  tls:
    certificate: {cert}
    key: {key}
"""
POSTFIX_ECDSA = """\
smtpd_tls_eccert_file = {cert}
smtpd_tls_eckey_file = {key}
"""
MXBACKUP_ECDSA = """\
    extra_certificate: {cert}
    extra_key: {key}
"""


def make_certificate(
    procs: Any, directory: Path, kind: str = "rsa:2048", stem: str = ""
) -> tuple[Path, Path]:
    """A self-signed certificate and its key: ``kind`` as ``openssl req -newkey`` takes it
    (``rsa:2048``, or ``ec`` for ECDSA P-256)."""
    directory.mkdir(parents=True, exist_ok=True)
    cert, key = directory / f"{stem}cert.pem", directory / f"{stem}key.pem"
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"] if kind == "ec" else [
        "-newkey", kind]  # fmt: skip
    rc, out, err = procs.run(
        ["openssl", "req", "-x509", *newkey, "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "30", "-subj", "/CN=mx2.example.net"], 120,
    )  # fmt: skip
    if rc != 0:
        raise RuntimeError(f"openssl req: {err.strip() or out.strip()}")
    key.chmod(0o644)  # mxbackup may run unprivileged; the directory is the bench's own
    return cert, key


def configure(postfix: Any, mx: Any, cert: Path, key: Path) -> None:
    """After both setups: TLS on in both configurations."""
    main_cf = postfix.etc / "main.cf"
    main_cf.write_text(main_cf.read_text() + POSTFIX_MAIN.format(cert=cert, key=key))
    master_cf = postfix.etc / "master.cf"
    master_cf.write_text(master_cf.read_text() + POSTFIX_MASTER)
    text = mx.config.read_text()
    marker = "routes:\n"
    mx.config.write_text(text.replace(marker, MXBACKUP_TLS.format(cert=cert, key=key) + marker, 1))


def add_ecdsa(postfix: Any, mx: Any, cert: Path, key: Path) -> None:
    """After ``configure``: an ECDSA certificate offered beside the RSA one, in both."""
    main_cf = postfix.etc / "main.cf"
    main_cf.write_text(main_cf.read_text() + POSTFIX_ECDSA.format(cert=cert, key=key))
    text = mx.config.read_text()
    marker = "routes:\n"
    mx.config.write_text(
        text.replace(marker, MXBACKUP_ECDSA.format(cert=cert, key=key) + marker, 1)
    )


def scenario(bench: Any, say: Any) -> dict[str, Any]:
    count = bench.p["acceptance_messages"]["5KB"]
    runs = bench.p["runs"]
    out: dict[str, Any] = {"size_bytes": 5120, "messages_per_run": count, "runs": runs}
    for server in bench.servers(0):
        try:
            with bench.running(server):
                for c in CONCURRENCIES:
                    for mode in MODES:
                        key = f"c{c}_{mode}"
                        out.setdefault(key, {"concurrency": c, "mode": mode})
                        out[key][server.name] = _cell(bench, server, c, mode, count, runs, say)
        except Exception as e:  # noqa: BLE001
            bench.error(f"starttls {server.name}", e)
    try:
        cert, key = make_certificate(bench.procs, bench.work / "tls", "ec", "ecdsa-")
        add_ecdsa(bench.postfix, bench.mx, cert, key)
    except Exception as e:  # noqa: BLE001
        bench.error("starttls ecdsa", e)
        return _with_ratios(out)
    for server in bench.servers(1):
        try:
            with bench.running(server):
                for c in CONCURRENCIES:
                    key = f"c{c}_ecdsa"
                    out.setdefault(key, {"concurrency": c, "mode": "ecdsa"})
                    out[key][server.name] = _cell(bench, server, c, "new", count, runs, say)
        except Exception as e:  # noqa: BLE001
            bench.error(f"starttls ecdsa {server.name}", e)
    return _with_ratios(out)


def _with_ratios(out: dict[str, Any]) -> dict[str, Any]:
    for entry in out.values():
        if isinstance(entry, dict) and "mode" in entry:
            entry["ratio"] = {
                k: bench_ratio(entry, k) for k in ("msgs_per_sec_median", "cpu_seconds_per_msg")
            }
    return out


def bench_ratio(entry: dict[str, Any], key: str) -> float | None:
    pf, mx = entry.get("postfix", {}).get(key), entry.get("mxbackup", {}).get(key)
    return round(mx / pf, 3) if isinstance(pf, int | float) and pf and mx is not None else None


def _cell(bench: Any, server: Any, c: int, mode: str, count: int, runs: int, say: Any) -> Any:
    res = []
    warm = bench.p["warmup_messages"]
    if warm:
        _load(bench, c, mode, min(warm, count))
        bench.settle(server, max_wait=60)
    for i in range(runs):
        cpu0 = server.cpu_seconds()
        r = _load(bench, c, mode, count)
        cpu1, _ = bench.settle(server, max_wait=60 + count * 0.05)
        r["cpu_seconds_per_msg"] = round((cpu1 - cpu0) / max(1, r["messages"]), 6)
        res.append(r)
        say(
            f"starttls c={c} {mode} {server.name} run {i + 1}: {r['msgs_per_sec']} msg/s, "
            f"{r['cpu_seconds_per_msg'] * 1000:.2f} ms CPU/msg, generator "
            f"{r['client_cpu_share'] * 100:.0f}% of the CPUs, resumed {r['resumed_share']}"
        )
    rates = [r["msgs_per_sec"] for r in res]
    return {
        "msgs_per_sec_median": round(statistics.median(rates), 1),
        "msgs_per_sec_min": min(rates),
        "msgs_per_sec_max": max(rates),
        "cpu_seconds_per_msg": round(statistics.median(r["cpu_seconds_per_msg"] for r in res), 6),
        "client_cpu_share_median": statistics.median(r["client_cpu_share"] for r in res),
        "resumed_share_median": statistics.median(r["resumed_share"] for r in res),
        "p50_ms_median": statistics.median(r["latency_ms"]["p50"] for r in res),
        "p99_ms_median": statistics.median(r["latency_ms"]["p99"] for r in res),
        "runs": res,
    }


def _load(bench: Any, c: int, mode: str, count: int) -> dict[str, Any]:
    argv = [sys.executable, str(BENCH / "tlsload.py"), "--port", str(bench.port),
            "--concurrency", str(c), "--messages", str(count)]  # fmt: skip
    if mode == "resumed":
        argv.append("--resume")
    rc, so, se = bench.procs.run(argv, timeout=120 + count * 0.2)
    res = json.loads(so) if so.strip() else {}
    if rc != 0 or not res or res.get("errors"):
        raise RuntimeError(f"tlsload exit {rc}: {se.strip()[:300]} {res.get('first_error', '')}")
    return res


def table_rows(r: dict[str, Any], add: Any, spread: Any, ms: Any) -> None:
    st = r.get("starttls", {})
    for e in st.values():
        if not (isinstance(e, dict) and "mode" in e):
            continue
        pf, mx = e.get("postfix", {}), e.get("mxbackup", {})
        what = {
            "new": "new TLS session each",
            "resumed": "sessions resumed",
            "ecdsa": "new sessions, ECDSA beside RSA",
        }[e["mode"]]
        add(
            f"STARTTLS 5 KB c={e['concurrency']}, {what}",
            f"msg/s, median [min–max] of {st.get('runs')}",
            "higher",
            pf.get("msgs_per_sec_median"),
            mx.get("msgs_per_sec_median"),
            pf_text=spread(pf),
            mx_text=spread(mx),
        )
        add(
            f"server CPU per message, STARTTLS c={e['concurrency']}, {e['mode']}",
            "ms CPU/msg (median)",
            "lower",
            ms(pf.get("cpu_seconds_per_msg")),
            ms(mx.get("cpu_seconds_per_msg")),
        )
