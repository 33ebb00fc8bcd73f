"""Power cuts under load (issue 17, goal 3): is every 250 still on disk, and is no torn message
ever queued?

Run as root from the repository's root, with the project's venv (needs a loop device and
mkfs.ext4; loopback only):

    sudo PYTHONPATH=. .venv/bin/python bench/powercut.py --trials 20 [--hammer]

Each trial makes a fresh ext4 file system on a loop device (an image under ``--workdir``),
starts ``twistd mxbackup`` with its spool there (primary down), and has four SMTP clients send
messages of 1 KB to 300 KB (both sides of ``incoming.SPILL``), each body derived from a token so
it can be checked byte for byte.  After 1-4 s it cuts the power: ``EXT4_IOC_SHUTDOWN`` with
``EXT4_GOING_FLAGS_NOLOGFLUSH`` (nothing more reaches the disk, the journal is not flushed),
then SIGKILL.  The file system is unmounted and mounted again (the journal is replayed), and
``Spool.recover()`` runs on it.  Checked: every message that got its 250 is live, with the
bytes sent; every live message is whole (a commit the cut tore must not be queued); torn
commits are counted (``corrupt/``) and none of them had a 250.

``--hammer``: a thread fsyncs a file on the same file system every 0-2 ms, as SQLite or any
other writer would: the journal then commits at arbitrary moments, also between a round's
renames and its syncfs, which is what tears a commit (its name durable before its data).
``--preload N`` queues N messages (durable) before the first start; ``--twice`` starts the server
again after the cut, under the same load, and cuts again: with ``--preload 20000`` or more the
second start reads the queue while it accepts mail (``queue.background``), so the second cut
comes in the middle of that load, after its rounds moved the checkpoint past the commits the
first cut may have torn (``checkpoint.pin``).  Checked besides: every preloaded message is live.

Prints one JSON line per trial and a summary; exits 1 if any check failed.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import json
import os
import random
import re
import signal
import smtplib
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import scale  # bench/scale.py: the spool generator

ROOT = Path(__file__).resolve().parent.parent
TWISTD = str(Path(sys.executable).parent / "twistd")
EXT4_IOC_SHUTDOWN = 0x8004587D  # _IOR('X', 125, __u32)
NOLOGFLUSH = 2
SIZES = [1000, 5000, 30000, 100000, 200000, 300000]


def body_for(token: str, size: int) -> bytes:
    line = (token + " ").encode() * 8 + b"\r\n"
    return b"Subject: " + token.encode() + b"\r\n\r\n" + line * max(1, size // len(line))


class Load:
    """Clients sending until stopped; what got a 250, by queue id, with the body's hash."""

    def __init__(self, port: int, clients: int, hammer: Path | None) -> None:
        self.port = port
        self.stop = threading.Event()
        self.acked: dict[str, str] = {}
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._client, daemon=True) for _ in range(clients)]
        if hammer is not None:
            self.threads.append(threading.Thread(target=self._hammer, args=(hammer,), daemon=True))
        for t in self.threads:
            t.start()

    def _client(self) -> None:
        while not self.stop.is_set():
            try:
                smtp = smtplib.SMTP("127.0.0.1", self.port, timeout=10)
                smtp.ehlo("client.test")
                while not self.stop.is_set():
                    token = f"T{random.getrandbits(64):016x}"
                    data = body_for(token, random.choice(SIZES))
                    smtp.mail("a@sender.test")
                    smtp.rcpt("user@example.com")
                    code, reply = smtp.data(data)
                    found = re.search(rb"queued as (\w+)", reply)
                    if code == 250 and found:
                        with self.lock:
                            self.acked[found.group(1).decode()] = hashlib.sha256(data).hexdigest()
            except (OSError, smtplib.SMTPException):
                time.sleep(0.05)

    def _hammer(self, path: Path) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            while not self.stop.is_set():
                os.write(fd, b"x")
                os.fsync(fd)
                time.sleep(random.uniform(0, 0.002))
        except OSError:
            pass  # the power is cut
        finally:
            os.close(fd)

    def finish(self) -> dict[str, str]:
        self.stop.set()
        for t in self.threads:
            t.join(10)
        with self.lock:
            return dict(self.acked)


def sh(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True)


def fresh_fs(image: Path, mnt: Path, size: str = "1G") -> None:
    subprocess.run(["umount", str(mnt)], capture_output=True)
    mnt.mkdir(parents=True, exist_ok=True)
    sh("truncate", "-s", size, str(image))
    sh("mkfs.ext4", "-q", "-F", str(image))
    sh("mount", "-o", "loop", str(image), str(mnt))


def wait_port(port: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"mxbackup did not listen on {port}")


RECOVER = """
import json, os, sys
from twisted.internet import defer
from twisted.logger import formatEvent, globalLogPublisher
from mxbackup.queue.spool import Spool
lines = []
globalLogPublisher.addObserver(lambda e: lines.append(formatEvent(e)))
live = Spool(sys.argv[1], lambda fn, *a: defer.maybeDeferred(fn, *a)).recover()
print(json.dumps({"live": [e.id for e in live], "corrupt": os.listdir(sys.argv[1] + "/corrupt"),
                  "log": [line for line in lines if "corrupt/" in line]}))
"""


def run_and_cut(
    args: argparse.Namespace, work: Path, mnt: Path, config: Path, env: dict, log_path: Path
) -> dict[str, str]:
    """Start twistd on the spool, send under load, cut the power after 1-4 s, kill it: the
    messages that got a 250."""
    with open(log_path, "wb") as log:
        server = subprocess.Popen(
            [TWISTD, "-n", "--pidfile=", "mxbackup", "--config", str(config)],
            cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_port(args.port)
        load = Load(args.port, 4, mnt / "hammer" if args.hammer else None)
        time.sleep(random.uniform(1.0, 4.0))
        fd = os.open(mnt, os.O_RDONLY)
        try:
            fcntl.ioctl(fd, EXT4_IOC_SHUTDOWN, struct.pack("I", NOLOGFLUSH))
        finally:
            os.close(fd)
    finally:
        os.killpg(server.pid, signal.SIGKILL)
        server.wait()
    return load.finish()


def trial(n: int, args: argparse.Namespace, work: Path) -> dict[str, Any]:
    image, mnt = work / "powercut.img", work / "mnt"
    fresh_fs(image, mnt, "3G" if args.preload else "1G")  # (inodes: 2 files a message)
    spool = mnt / "spool"
    preloaded: set[str] = set()
    if args.preload:  # queued before the first start, durable (scale.generate syncs)
        scale.generate(str(spool), args.preload, "example.com", "user@example.com", "a@s.test")
        preloaded = set(os.listdir(spool / "env"))
        (spool / ".synced").touch()  # a spool the server wrote: recovery checks from here
    config = work / "mx.yaml"
    config.write_text(
        f"""server:
  hostname: mx2.example.net
  listen:
    - "tcp:{args.port}:interface=127.0.0.1"
  spool: {spool}
  min_free_space: 0
routes:
  - domain: example.com
    target_host: 127.0.0.1
    port: {args.port + 1}
    addresses: all
"""
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    acked: dict[str, str] = {}
    mid_load = []
    for phase in range(2 if args.twice else 1):  # --twice: the second start reads the
        # queue in the background (``--preload`` of 20,000 or more) and is cut meanwhile
        log_path = work / f"twistd-{n}-{phase}.log"
        acked.update(run_and_cut(args, work, mnt, config, env, log_path))
        mid_load.append(b"queue loaded" not in log_path.read_bytes())
        sh("umount", str(mnt))
        sh("mount", "-o", "loop", str(image), str(mnt))
    out = subprocess.run(
        [sys.executable, "-c", RECOVER, str(spool)], env=env, capture_output=True, text=True
    )
    if out.returncode != 0:
        return {"trial": n, "error": out.stderr[-2000:]}
    found = json.loads(out.stdout.strip().splitlines()[-1])
    live = set(found["live"])
    torn_live = []
    for qid in sorted(live - preloaded):  # (those were durable before the first start)
        data = (spool / "new" / qid).read_bytes()
        m = re.search(rb"Subject: (T[0-9a-f]{16})\r\n", data)
        rest = data[m.start() :] if m else b""
        whole = m is not None and any(rest == body_for(m.group(1).decode(), s) for s in SIZES)
        if not whole or (qid in acked and hashlib.sha256(rest).hexdigest() != acked[qid]):
            torn_live.append(qid)
    corrupt = sorted({name.removesuffix(".env") for name in found["corrupt"]})
    return {
        "trial": n,
        "acked": len(acked),
        "live": len(live),
        "acked_lost": sorted(q for q in acked if q not in live),
        "preloaded_lost": sorted(preloaded - live),
        "cut_mid_load": mid_load,
        "torn_live": torn_live,
        "torn_to_corrupt": len(corrupt),
        "corrupt_acked": [q for q in corrupt if q in acked],
        "log": found["log"],
    }


def main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--hammer", action="store_true", help="another writer fsyncs meanwhile")
    ap.add_argument("--port", type=int, default=2725, help="mxbackup's; the next one: primary")
    ap.add_argument("--workdir", default="/var/tmp", help="where the image and logs go")
    ap.add_argument("--preload", type=int, default=0, help="messages queued before the start")
    ap.add_argument("--twice", action="store_true", help="start again after the cut, and cut again")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("powercut: must run as root (loop mounts)", file=sys.stderr)
        return 2
    work = Path(args.workdir) / "mxbackup-powercut"
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    try:
        for n in range(args.trials):
            row = trial(n, args, work)
            print(json.dumps(row), flush=True)
            rows.append(row)
    finally:
        subprocess.run(["umount", str(work / "mnt")], capture_output=True)
        (work / "powercut.img").unlink(missing_ok=True)
    checks = ("error", "acked_lost", "torn_live", "corrupt_acked", "preloaded_lost")
    failed = [r for r in rows if any(r.get(k) for k in checks)]
    total = {k: sum(r.get(k, 0) for r in rows) for k in ("acked", "live", "torn_to_corrupt")}
    print(json.dumps({"trials": len(rows), **total, "failed_trials": [r["trial"] for r in failed]}))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
