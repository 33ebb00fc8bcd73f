#!/usr/bin/env python3
"""mxbackup vs Postfix, side by side, on loopback: one command.

    python3 bench/run.py [--quick] [--out bench/results] [--keep]

Runs as root (it starts an isolated Postfix instance and may apt-get install postfix).  Works
with the system python3 or the project's venv: it installs what is missing (Debian ``postfix``
for Postfix, ``smtp-source`` and ``smtp-sink``; the venv via ``make .venv/.installed``), then
re-executes itself with the venv's python.  See bench/README.md for what is measured.

Exit status: 0 all measured, 1 some measurement failed (see "errors" in the JSON), 2 not root,
3 dependencies could not be installed, 4 another bench run holds the lock.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import fcntl
import json
import os
import platform
import re
import shutil
import signal
import socket
import stat
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import starttls  # bench/starttls.py: the STARTTLS scenario

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV = ROOT / ".venv"
VENV_PY = VENV / "bin" / "python"
TWISTD = VENV / "bin" / "twistd"

SBIN = Path("/usr/sbin")
SMTP_SOURCE = SBIN / "smtp-source"
SMTP_SINK = SBIN / "smtp-sink"
POSTFIX_TOOLS = (
    "postfix",
    "postconf",
    "postmap",
    "postqueue",
    "postsuper",
    "smtp-source",
    "smtp-sink",
)
LOCK_FILE = "/var/tmp/mxbackup-bench.lock"

HOST = "127.0.0.1"
HOSTNAME = "mx2.example.net"
DOMAIN = "example.com"
SENDER = "bench@sender.test"
RCPT = "user@example.com"
RECIPIENTS = [RCPT, "postmaster@example.com"] + [f"u{i}@example.com" for i in range(100)]
SIZES = {"5KB": 5 * 1024, "100KB": 100 * 1024}
CONCURRENCIES = (1, 10, 50)

PROFILES: dict[str, dict[str, Any]] = {
    "full": {
        "acceptance_messages": {"5KB": 1000, "100KB": 500},
        "runs": 3,
        "drain_messages": 2000,
        "drain_runs": 3,
        "drain_pause": 31.0,
        "latency_messages": 2000,
        "latency_concurrency": 50,
        "latency_rate": 250.0,  # offered msg/s, paced run: below what either takes at c=50
        "scale_messages": 100_000,
        "tick_counts": (1_000, 100_000),
        "settle_window": 0.5,
        "warmup_messages": 50,
        "restart_per_cell": True,
    },
    "quick": {
        "acceptance_messages": {"5KB": 20, "100KB": 10},
        "runs": 3,
        "drain_messages": 60,
        "drain_runs": 1,
        "drain_pause": 0.0,
        "latency_messages": 100,
        "latency_concurrency": 50,
        "latency_rate": 200.0,
        "scale_messages": 1_000,
        "tick_counts": (1_000, 10_000),
        "settle_window": 0.2,
        "warmup_messages": 0,
        "restart_per_cell": False,
    },
}

CLK_TCK = os.sysconf("SC_CLK_TCK")


def say(msg: str) -> None:
    sys.stderr.write(f"[bench {time.strftime('%H:%M:%S')}] {msg}\n")
    sys.stderr.flush()


class BenchError(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# bootstrap: root, Debian postfix, the venv, then re-exec with the venv's python
# ---------------------------------------------------------------------------------------------
def have_postfix() -> bool:
    return all(os.access(SBIN / t, os.X_OK) for t in POSTFIX_TOOLS)


def system_postfix_pid() -> int | None:
    """The pid of the system's own Postfix master (default instance), if it runs."""
    try:
        pid = int(Path("/var/spool/postfix/pid/master.pid").read_text().split()[0])
        if Path(f"/proc/{pid}/comm").read_text().strip() == "master":
            return pid
    except (OSError, ValueError, IndexError):
        pass
    return None


def ensure_postfix() -> None:
    if have_postfix():
        return
    say("installing Debian postfix (smtp-source, smtp-sink, Postfix)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    before = system_postfix_pid()
    # "No configuration": the package then does not configure or start a system instance.
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        subprocess.run(
            ["debconf-set-selections"],
            input=b"postfix postfix/main_mailer_type select No configuration\n"
            b"postfix postfix/mailname string localhost\n",
            env=env,
            timeout=60,
            check=False,
            capture_output=True,
        )
    try:
        subprocess.run(
            ["apt-get", "update", "-qq"],
            env=env,
            timeout=600,
            check=False,
            stdout=subprocess.DEVNULL,
        )
        subprocess.run(
            ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postfix"],
            env=env,
            timeout=900,
            check=False,
            stdout=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError) as e:
        say(f"apt-get failed: {e}")
    if not have_postfix():
        say("cannot install postfix (apt-get install -y postfix failed)")
        sys.exit(3)
    if before is None and system_postfix_pid() is not None:
        say("the postfix package started the system Postfix: stopping it")
        subprocess.run(
            [str(SBIN / "postfix"), "stop"], timeout=60, check=False, capture_output=True
        )


def ensure_venv() -> None:
    if TWISTD.exists() and VENV_PY.exists() and (VENV / ".installed").exists():
        return
    say(f"creating the venv: make -C {ROOT} .venv/.installed")
    r = subprocess.run(["make", "-C", str(ROOT), ".venv/.installed"], timeout=1800, check=False)
    if r.returncode != 0 or not TWISTD.exists():
        say("could not create the venv")
        sys.exit(3)


def in_venv() -> bool:
    try:
        return Path(sys.prefix).resolve() == VENV.resolve()
    except OSError:
        return False


def bootstrap() -> None:
    if os.geteuid() != 0:
        say("must run as root (isolated Postfix instance, apt-get)")
        sys.exit(2)
    ensure_postfix()
    ensure_venv()
    if not in_venv():
        if os.environ.get("MXBENCH_REEXEC"):
            say(f"re-exec with {VENV_PY} did not land in the venv")
            sys.exit(3)
        env = dict(os.environ, MXBENCH_REEXEC="1")
        os.execve(str(VENV_PY), [str(VENV_PY), str(Path(__file__).resolve()), *sys.argv[1:]], env)


# ---------------------------------------------------------------------------------------------
# processes: everything we start is in its own session (process group) and killed at the end
# ---------------------------------------------------------------------------------------------
def proc_stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rfind(")") + 2 :].split()  # fields from 3 (state) on


def group_members(pgid: int) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = proc_stat(int(entry))
            if st is not None and int(st[2]) == pgid:  # field 5: pgrp
                pids.append(int(entry))
    return pids


def cpu_of(pid: int, children: bool = True) -> float:
    """utime + stime (+ cutime + cstime: reaped children) of one process, in seconds."""
    st = proc_stat(pid)
    if st is None:
        return 0.0
    ticks = int(st[11]) + int(st[12])  # fields 14, 15
    if children:
        ticks += int(st[13]) + int(st[14])  # fields 16, 17
    return ticks / CLK_TCK


def status_kb(pid: int, key: str) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        pass
    return None


class Processes:
    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[Any]] = []
        self.cleanups: list[Callable[[], None]] = []

    def popen(self, argv: list[str], **kw: Any) -> subprocess.Popen[Any]:
        p = subprocess.Popen(argv, start_new_session=True, **kw)
        self.procs.append(p)
        return p

    def kill(self, p: subprocess.Popen[Any], grace: float = 5.0) -> None:
        if p.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
            try:
                p.wait(grace)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(5)
        if group_members(p.pid):  # leftovers of a group we created
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)

    def run(self, argv: list[str], timeout: float, **kw: Any) -> tuple[int, str, str]:
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        p = self.popen(argv, **kw)
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(p, grace=1.0)
            p.communicate()
            raise BenchError(f"{Path(argv[0]).name} timed out after {timeout:.0f}s") from None
        finally:
            self.procs.remove(p)
        return p.returncode, _text(out), _text(err)

    def cleanup(self) -> None:
        for fn in reversed(self.cleanups):
            with contextlib.suppress(Exception):
                fn()
        for p in reversed(self.procs):
            with contextlib.suppress(Exception):
                self.kill(p, grace=3.0)


def _text(b: Any) -> str:
    if b is None:
        return ""
    return b.decode("utf-8", "replace") if isinstance(b, bytes) else str(b)


def set_aside(path: Path, trash: Path, recreate: bool = True) -> None:
    """Move a used queue directory out of the way and (``recreate``) put an empty one, same
    owner and mode, in its place; the trash is deleted with the work directory at the end.

    Why not delete: ext4 does not reuse an inode for 30 s after it was freed and scans past
    every such inode at each file creation (``recently_deleted`` in ``find_inode_bit``,
    seen with perf: 80 % of the spool's CPU).  A cell started right after deleting the last
    cell's thousands of queue files ran 2-3 times slower, for Postfix and mxbackup alike."""
    st = path.stat()
    trash.mkdir(parents=True, exist_ok=True)
    path.rename(trash / f"{path.name}-{time.monotonic_ns()}")
    if not recreate:
        return
    path.mkdir(mode=stat.S_IMODE(st.st_mode))
    os.chown(path, st.st_uid, st.st_gid)
    os.chmod(path, stat.S_IMODE(st.st_mode))


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect((HOST, port))
            return True
        except OSError:
            return False


def wait_port(
    port: int, up: bool, timeout: float, alive: Callable[[], bool] | None = None
) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(port) == up:
            return time.monotonic()
        if alive is not None and not alive():
            raise BenchError(f"process exited while waiting for port {port}")
        time.sleep(0.01)
    raise BenchError(f"port {port} still {'closed' if up else 'open'} after {timeout:.0f}s")


def count_files(*dirs: Path) -> int:
    n = 0
    for d in dirs:
        for _root, _dirs, files in os.walk(d):
            n += len(files)
    return n


# ---------------------------------------------------------------------------------------------
# the two systems under test
# ---------------------------------------------------------------------------------------------
MASTER_CF = """\
# service type  private unpriv  chroot  wakeup  maxproc command
{host}:{port} inet n  -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

MAIN_CF = """\
# Isolated Postfix instance: backup MX for {domain}, primary [{host}]:{primary} (down).
# Everything not set here is Postfix's default (fsync before 250, in_flow_delay, concurrency).
compatibility_level = 3.6
config_directory = {etc}
queue_directory = {queue}
data_directory = {data}
meta_directory = /etc/postfix
myhostname = {hostname}
mydomain = example.net
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = {host}
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = {domain}
relay_recipient_maps = hash:{etc}/recipients
transport_maps = hash:{etc}/transport
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
smtpd_banner = $myhostname ESMTP
maillog_file = {maillog}
biff = no
"""


class PostfixMX:
    name = "postfix"

    def __init__(self, procs: Processes, work: Path, port: int, primary: int) -> None:
        self.procs = procs
        self.port = port
        self.primary = primary
        self.dir = work / "postfix"
        self.etc = self.dir / "etc"
        self.queue = self.dir / "queue"
        self.data = self.dir / "data"
        self.maillog = self.dir / "maillog"
        self.master_pid: int | None = None
        self.log_path = self.maillog

    def setup(self) -> None:
        for d in (self.etc, self.queue, self.data):
            d.mkdir(parents=True, exist_ok=True)
            d.chmod(0o755)
        shutil.chown(self.data, user="postfix")
        (self.etc / "main.cf").write_text(
            MAIN_CF.format(
                etc=self.etc,
                queue=self.queue,
                data=self.data,
                host=HOST,
                hostname=HOSTNAME,
                domain=DOMAIN,
                primary=self.primary,
                maillog=self.maillog,
            )
        )
        (self.etc / "master.cf").write_text(MASTER_CF.format(host=HOST, port=self.port))
        (self.etc / "recipients").write_text("".join(f"{r} OK\n" for r in RECIPIENTS))
        (self.etc / "transport").write_text(f"{DOMAIN} relay:[{HOST}]:{self.primary}\n")
        for name in ("recipients", "transport"):
            rc, out, err = self.procs.run(
                [str(SBIN / "postmap"), "-c", str(self.etc), f"hash:{self.etc / name}"], 60
            )
            if rc != 0:
                raise BenchError(f"postmap {name}: {err.strip() or out.strip()}")

    def _postfix(self, *args: str, timeout: float = 60) -> tuple[int, str, str]:
        return self.procs.run([str(SBIN / "postfix"), "-c", str(self.etc), *args], timeout)

    def clear_queue(self) -> None:
        """Postfix is stopped: every queue directory with mail in it is set aside (not
        deleted, see ``set_aside``)."""
        for name in ("maildrop", "incoming", "active", "deferred", "defer", "hold", "bounce"):
            sub = self.queue / name
            if sub.is_dir() and count_files(sub):
                set_aside(sub, self.dir.parent / "trash")

    def start(self, fresh: bool = True) -> dict[str, float]:
        if fresh:
            self.clear_queue()
        t0 = time.monotonic()
        rc, out, err = self._postfix("start", timeout=120)
        if rc != 0:
            raise BenchError(f"postfix start failed: {err.strip() or out.strip()}")
        self.procs.cleanups.append(self.stop)
        pidfile = self.queue / "pid" / "master.pid"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, ValueError, IndexError):
                self.master_pid = int(pidfile.read_text().split()[0])
                break
            time.sleep(0.05)
        if self.master_pid is None:
            raise BenchError("postfix master did not write its pid")
        t_up = wait_port(self.port, True, 60, alive=lambda: proc_stat(self.master_pid) is not None)
        return {"start_seconds": round(t_up - t0, 3)}

    def stop(self) -> None:
        if self.stop in self.procs.cleanups:
            self.procs.cleanups.remove(self.stop)
        pid = self.master_pid
        if pid is None:
            return
        # what `postfix stop` does (it then polls once a second): SIGTERM to the master,
        # which passes it on to its children and exits
        with contextlib.suppress(ProcessLookupError):
            if proc_stat(pid) is not None:
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and group_members(pid):
            time.sleep(0.05)
        if group_members(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
            time.sleep(0.2)
        self.master_pid = None
        wait_port(self.port, False, 15)

    def pids(self) -> list[int]:
        return group_members(self.master_pid) if self.master_pid else []

    def cpu_seconds(self) -> float:
        # every process of the instance (master, smtpd, cleanup, qmgr, trivial-rewrite, error,
        # relay, postlogd...) is in the master's process group; the master's cutime/cstime
        # hold the CPU of its children that already exited.
        return sum(cpu_of(pid) for pid in self.pids())

    def queued(self) -> int:
        q = self.queue
        return count_files(q / "incoming", q / "active", q / "deferred", q / "hold", q / "maildrop")

    def busy(self) -> bool:
        return count_files(self.queue / "incoming", self.queue / "active") > 0

    def flush(self) -> None:
        rc, out, err = self.procs.run([str(SBIN / "postqueue"), "-c", str(self.etc), "-f"], 60)
        if rc != 0:
            raise BenchError(f"postqueue -f failed: {err.strip() or out.strip()}")

    def version(self) -> str:
        try:
            return subprocess.run(
                [str(SBIN / "postconf"), "-d", "-h", "mail_version"],
                capture_output=True,
                text=True,
                timeout=30,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return "?"


class MXBackup:
    name = "mxbackup"

    def __init__(
        self, procs: Processes, work: Path, port: int, primary: int, probe_interval: float = 1.0
    ) -> None:
        self.procs = procs
        self.port = port
        self.primary = primary
        self.dir = work / "mxbackup"
        self.spool = self.dir / "spool"
        self.config = self.dir / "mx.yaml"
        self.log_path = self.dir / "twistd.log"
        self.probe_interval = probe_interval
        self.proc: subprocess.Popen[Any] | None = None
        self._log_offset = 0  # where the last start's lines begin in the log
        self._started = 0.0  # monotonic time of the last start

    def setup(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        rcpts = "\n".join(f"      - {r}" for r in RECIPIENTS)
        self.config.write_text(
            f"""\
# mxbackup as backup MX for {DOMAIN}; primary {HOST}:{self.primary} (down).
server:
  hostname: {HOSTNAME}
  listen:
    - "tcp:{self.port}:interface={HOST}"
  spool: {self.spool}
  max_connections: 500
  max_connections_per_ip: 200
  min_free_space: 0
routes:
  - domain: {DOMAIN}
    target_host: {HOST}
    port: {self.primary}
    addresses:
{rcpts}
delivery:
  probe_interval: {self.probe_interval}
"""
        )
        rc, out, err = self.procs.run(
            [str(VENV / "bin" / "mxbackup"), "check-config", str(self.config)],
            120,
            env=self._env(),
            cwd=str(self.dir),
        )
        if rc != 0:
            raise BenchError(f"mxbackup check-config: {err.strip() or out.strip()}")

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT)
        env.pop("MXBENCH_REEXEC", None)
        return env

    def start(self, fresh: bool = True, timeout: float = 300) -> dict[str, float]:
        if fresh and self.spool.exists():
            set_aside(self.spool, self.dir.parent / "trash", recreate=False)
        log = open(self.log_path, "ab")  # noqa: SIM115
        offset = self._log_offset = log.tell()
        t0 = self._started = time.monotonic()
        self.proc = self.procs.popen(
            [str(TWISTD), "--nodaemon", "--pidfile=", "mxbackup", "--config", str(self.config)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=str(self.dir),
            env=self._env(),
        )
        log.close()
        self.procs.cleanups.append(self.stop)
        deadline = t0 + timeout
        t_ready = None
        ready_line = ""
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(offset)
                data = f.read()
            i = data.find(b"mxbackup ready")
            if i >= 0:
                t_ready = time.monotonic()
                ready_line = data[i : data.find(b"\n", i)].decode("utf-8", "replace")
                break
            if self.proc.poll() is not None:
                raise BenchError(
                    f"twistd exited ({self.proc.returncode}): "
                    f"{data[-600:].decode('utf-8', 'replace')}"
                )
            time.sleep(0.005)
        if t_ready is None:
            raise BenchError(f"mxbackup not ready after {timeout:.0f}s")
        t_up = wait_port(self.port, True, 60, alive=lambda: self.proc.poll() is None)
        return {
            "ready_seconds": round(t_ready - t0, 3),
            "start_seconds": round(t_up - t0, 3),
            "ready_line": ready_line,
        }

    def queue_loaded(self, timeout: float) -> float:
        """Seconds from the last start to "queue loaded" (a big queue read while the server
        accepts mail, ``queue.background``)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log_path, "rb") as f:
                f.seek(self._log_offset)
                if b"queue loaded:" in f.read():
                    return round(time.monotonic() - self._started, 3)
            time.sleep(0.02)
        raise BenchError(f"the queue was not loaded after {timeout:.0f}s")

    def stop(self) -> None:
        if self.stop in self.procs.cleanups:
            self.procs.cleanups.remove(self.stop)
        if self.proc is not None:
            self.procs.kill(self.proc, grace=15)
            if self.proc in self.procs.procs:
                self.procs.procs.remove(self.proc)
            self.proc = None
        wait_port(self.port, False, 15)

    def pids(self) -> list[int]:
        """twistd and its spool process (same process group)."""
        return group_members(self.proc.pid) if self.proc else []

    def cpu_seconds(self) -> float:
        return sum(cpu_of(pid) for pid in self.pids())

    def queued(self) -> int:
        try:
            return len(os.listdir(self.spool / "new"))
        except OSError:
            return 0

    def busy(self) -> bool:
        try:
            return bool(os.listdir(self.spool / "tmp"))
        except OSError:
            return False

    def rss_kb(self) -> dict[str, int | None]:
        """Summed over twistd and its spool process."""
        out: dict[str, int | None] = {}
        for key in ("VmRSS", "VmHWM"):
            values = [status_kb(pid, key) for pid in self.pids()]
            out[key] = sum(v for v in values if v is not None) if any(values) else None
        return out

    def version(self) -> str:
        return _git_describe()


Server = PostfixMX | MXBackup


# ---------------------------------------------------------------------------------------------
# measurements
# ---------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace, procs: Processes, work: Path) -> None:
        self.args = args
        self.p = PROFILES["quick" if args.quick else "full"]
        self.procs = procs
        self.work = work
        self.port = free_port()
        self.primary = free_port()
        while self.primary == self.port:
            self.primary = free_port()
        self.postfix = PostfixMX(procs, work, self.port, self.primary)
        self.mx = MXBackup(procs, work, self.port, self.primary, probe_interval=1.0)
        self.errors: list[str] = []
        self.notes: list[str] = []

    def servers(self, index: int = 0) -> list[Server]:
        """Both systems; the order alternates so that a drift in the machine's load does not
        always favour the same one."""
        pair: list[Server] = [self.postfix, self.mx]
        return pair if index % 2 == 0 else pair[::-1]

    def error(self, where: str, e: BaseException) -> None:
        msg = f"{where}: {type(e).__name__}: {e}"
        say("ERROR " + msg)
        self.errors.append(msg)

    @contextlib.contextmanager
    def running(self, server: Server, fresh: bool = True) -> Iterator[dict[str, float]]:
        if port_open(self.primary):
            raise BenchError(f"something listens on the 'down' primary port {self.primary}")
        try:
            info = server.start(fresh=fresh)
        except BaseException:
            server.stop()  # whatever part of it did start
            raise
        try:
            yield info
        finally:
            server.stop()

    def settle(self, server: Server, max_wait: float) -> tuple[float, float | None]:
        """Wait until the server has finished the work the last client caused (Postfix's
        qmgr moving mail to deferred, mxbackup's first delivery attempt): two windows in a
        row with (almost) no CPU and no message in flight.  Returns (CPU seconds at the start
        of the quiet period, seconds waited or None when it never settled)."""
        window = self.p["settle_window"]
        t0 = time.monotonic()
        prev = server.cpu_seconds()
        quiet = 0
        quiet_start = prev
        while time.monotonic() - t0 < max_wait:
            time.sleep(window)
            cur = server.cpu_seconds()
            if cur - prev <= 0.02 and not server.busy():
                if quiet == 0:
                    quiet_start = prev
                quiet += 1
                if quiet >= 2:
                    return quiet_start, round(time.monotonic() - t0, 2)
            else:
                quiet = 0
            prev = cur
        return server.cpu_seconds(), None

    def smtp_source(self, concurrency: int, count: int, size: int) -> float:
        argv = [
            str(SMTP_SOURCE),
            "-s",
            str(concurrency),
            "-m",
            str(count),
            "-l",
            str(size),
            "-f",
            SENDER,
            "-t",
            RCPT,
            f"{HOST}:{self.port}",
        ]
        t0 = time.perf_counter()
        rc, out, err = self.procs.run(argv, timeout=60 + count * 0.2)
        wall = time.perf_counter() - t0
        if rc != 0:
            raise BenchError(f"smtp-source exit {rc}: {(err or out).strip()[:300]}")
        return wall

    # -- acceptance ------------------------------------------------------------------------
    def acceptance(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        cells = []
        for size_name, size in SIZES.items():
            count = self.p["acceptance_messages"][size_name]
            for c in CONCURRENCIES:
                key = f"{size_name}_c{c}"
                out[key] = {
                    "size_bytes": size,
                    "concurrency": c,
                    "messages_per_run": count,
                    "runs": self.p["runs"],
                }
                cells.append((key, size, c, count))
        if self.p["restart_per_cell"]:
            # every cell: a freshly started server with an empty queue, Postfix and mxbackup
            # one after the other (the order alternates from cell to cell)
            for i, (key, size, c, count) in enumerate(cells):
                for server in self.servers(i):
                    try:
                        with self.running(server):
                            out[key][server.name] = self._acceptance_cell(server, c, count, size)
                    except Exception as e:  # noqa: BLE001
                        self.error(f"acceptance {key} {server.name}", e)
        else:  # --quick: one start per system for all the cells
            for server in self.servers(0):
                try:
                    with self.running(server):
                        for key, size, c, count in cells:
                            try:
                                out[key][server.name] = self._acceptance_cell(
                                    server, c, count, size
                                )
                            except BenchError as e:
                                self.error(f"acceptance {key} {server.name}", e)
                except Exception as e:  # noqa: BLE001
                    self.error(f"acceptance {server.name}", e)
        for entry in out.values():
            entry["ratio"] = {
                "msgs_per_sec": ratio(entry, "msgs_per_sec_median"),
                "cpu_seconds_per_msg": ratio(entry, "cpu_seconds_per_msg"),
            }
        return out

    def _acceptance_cell(self, server: Server, c: int, count: int, size: int) -> dict[str, Any]:
        runs = []
        warmup = min(self.p["warmup_messages"], count)
        if warmup:  # process spawning (Postfix), first connections: not measured
            self.smtp_source(c, warmup, size)
            self.settle(server, max_wait=60)
        for i in range(self.p["runs"]):
            q0 = server.queued()
            cpu0 = server.cpu_seconds()
            wall = self.smtp_source(c, count, size)
            cpu1, settled = self.settle(server, max_wait=60 + count * 0.05)
            q1 = server.queued()
            cpu = cpu1 - cpu0
            runs.append(
                {
                    "seconds": round(wall, 3),
                    "msgs_per_sec": round(count / wall, 1),
                    "cpu_seconds": round(cpu, 3),
                    "cpu_seconds_per_msg": round(cpu / count, 6),
                    "queued": q1 - q0,
                    "settle_seconds": settled,
                }
            )
            say(
                f"acceptance {size // 1024}KB c={c} {server.name} run {i + 1}: "
                f"{count / wall:.0f} msg/s, {cpu / count * 1000:.2f} ms CPU/msg"
            )
            if q1 - q0 != count:
                raise BenchError(f"{q1 - q0} of {count} messages in the queue after run {i + 1}")
        rates = [r["msgs_per_sec"] for r in runs]
        return {
            "msgs_per_sec_median": round(statistics.median(rates), 1),
            "msgs_per_sec_min": min(rates),
            "msgs_per_sec_max": max(rates),
            "cpu_seconds_per_msg": round(
                statistics.median(r["cpu_seconds_per_msg"] for r in runs), 6
            ),
            "runs": runs,
        }

    # -- latency ---------------------------------------------------------------------------
    def latency(self) -> dict[str, Any]:
        """Closed loop (each client sends on as soon as it is answered: a faster server is
        offered more), then paced at ``latency_rate`` msg/s for both (the same load)."""
        out: dict[str, Any] = {
            "concurrency": self.p["latency_concurrency"],
            "messages": self.p["latency_messages"],
            "size_bytes": SIZES["5KB"],
            "offered_msgs_per_sec": self.p["latency_rate"],
            "paced": {},
        }
        for server in self.servers(1):
            try:
                with self.running(server):
                    out[server.name] = self._latency_run(server, 0.0)
                    out["paced"][server.name] = self._latency_run(server, self.p["latency_rate"])
            except Exception as e:  # noqa: BLE001
                self.error(f"latency {server.name}", e)
        out["ratio"] = {k: ratio(out, k) for k in ("p50_ms", "p99_ms", "msgs_per_sec")}
        out["paced"]["ratio"] = {k: ratio(out["paced"], k) for k in ("p50_ms", "p99_ms")}
        return out

    def _latency_run(self, server: Any, rate: float) -> dict[str, Any]:
        cpu0 = server.cpu_seconds()
        rc, so, se = self.procs.run(
            [
                sys.executable,
                str(BENCH / "latency.py"),
                "--port",
                str(self.port),
                "--concurrency",
                str(self.p["latency_concurrency"]),
                "--count",
                str(self.p["latency_messages"]),
                "--size",
                str(SIZES["5KB"]),
                "--rcpt",
                RCPT,
                "--sender",
                SENDER,
                "--rate",
                str(rate),
            ],
            timeout=120 + self.p["latency_messages"] * 0.1,
        )
        res = json.loads(so) if so.strip() else {}
        cpu1, _ = self.settle(server, max_wait=60)
        if rc != 0 or not res:
            errors = res.get("errors", "")
            raise BenchError(f"latency client exit {rc}: {se.strip()[:300]} {errors}")
        if res.get("messages"):
            res["cpu_seconds_per_msg"] = round((cpu1 - cpu0) / res["messages"], 6)
        paced = f" offered {rate:g} msg/s ({res['behind_schedule']} late)" if rate else ""
        say(
            f"latency c={res['concurrency']}{paced} {server.name}: p50 {res['p50_ms']} ms,"
            f" p99 {res['p99_ms']} ms, {res['msgs_per_sec']} msg/s"
        )
        return res

    # -- drain -----------------------------------------------------------------------------
    def drain(self) -> dict[str, Any]:
        n = self.p["drain_messages"]
        out: dict[str, Any] = {"messages": n, "size_bytes": SIZES["5KB"]}
        runs: dict[str, list[dict[str, Any]]] = {}
        for i in range(self.p["drain_runs"]):
            for server in self.servers(i):
                # Each drain deletes n queue files; ext4 makes file creation slow for 30 s
                # after many deletions (see set_aside), which would tax the next run's sink
                # and queue: every run starts after that window.
                time.sleep(self.p["drain_pause"])
                try:
                    runs.setdefault(server.name, []).append(self._drain_one(server, n, i))
                except Exception as e:  # noqa: BLE001
                    self.error(f"drain {server.name} run {i + 1}", e)
        for name, results in runs.items():
            out[name] = {
                key: statistics.median(r[key] for r in results)
                if isinstance(value, int | float)
                else value
                for key, value in results[0].items()
            }
            out[name]["runs"] = results
        out["ratio"] = {
            k: ratio(out, k)
            for k in (
                "msgs_per_sec",
                "msgs_per_sec_from_up",
                "first_delivery_seconds",
                "cpu_seconds_per_msg",
            )
        }
        return out

    def _drain_one(self, server: Server, n: int, run: int = 0) -> dict[str, Any]:
        dump = self.work / f"sink-{server.name}-{run}"
        if dump.exists():
            shutil.rmtree(dump)
        dump.mkdir()
        shutil.chown(dump, user="nobody")
        with self.running(server):
            # queue n messages while the primary is down, and let every one be tried once
            self.smtp_source(10, n, SIZES["5KB"])
            _, settled = self.settle(server, max_wait=120 + n * 0.05)
            queued = server.queued()
            if queued != n:
                raise BenchError(f"{queued} of {n} messages queued before the drain")
            if settled is None:
                self.notes.append(
                    f"drain {server.name}: the queue did not settle before the primary came up"
                )
            cpu0 = server.cpu_seconds()
            sink = self.procs.popen(
                [
                    str(SMTP_SINK),
                    "-u",
                    "nobody",
                    "-d",
                    f"{dump}/%M.",
                    f"{HOST}:{self.primary}",
                    "256",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                t_up = wait_port(self.primary, True, 30, alive=lambda: sink.poll() is None)
                flush_s = None
                if isinstance(server, PostfixMX):
                    t = time.monotonic()
                    server.flush()  # Postfix waits for its queue run (queue_run_delay) otherwise
                    flush_s = round(time.monotonic() - t, 3)
                t_first = t_empty = None
                deadline = t_up + 60 + n * 0.1
                polls = 0
                while time.monotonic() < deadline:
                    now = time.monotonic()
                    # cheap checks every 10 ms; the queue (a directory walk for Postfix) is
                    # counted every 50 ms, or at once when the sink has had every message
                    if t_first is None:
                        if _any_file(dump):
                            t_first = now
                    elif polls % 5 == 0 or len(os.listdir(dump)) >= n:
                        if server.queued() == 0:
                            t_empty = now
                            break
                    polls += 1
                    time.sleep(0.01)
                delivered = count_files(dump)
                remaining = server.queued()
            finally:
                self.procs.kill(sink, grace=2)
                if sink in self.procs.procs:
                    self.procs.procs.remove(sink)
            cpu1, _ = self.settle(server, max_wait=30)
        if t_empty is None:
            raise BenchError(
                f"queue not empty {deadline - t_up:.0f}s after the primary came up:"
                f" {remaining} left, {delivered} delivered"
            )
        res = {
            "messages": n,
            "delivered_to_sink": delivered,
            "first_delivery_seconds": round(t_first - t_up, 3),
            "drain_seconds": round(t_empty - t_up, 3),
            "msgs_per_sec": round(n / max(t_empty - t_first, 1e-3), 1),
            "msgs_per_sec_from_up": round(n / max(t_empty - t_up, 1e-3), 1),
            "cpu_seconds_per_msg": round((cpu1 - cpu0) / n, 6),
        }
        if flush_s is not None:
            res["flush_command"] = "postqueue -f"
            res["flush_command_seconds"] = flush_s
        else:
            res["probe_interval_seconds"] = self.mx.probe_interval
        say(
            f"drain {server.name}: {res['msgs_per_sec']} msg/s, first delivery after "
            f"{res['first_delivery_seconds']} s"
        )
        return res

    # -- STARTTLS (last: it turns TLS on in both configurations) -----------------------------
    def starttls(self) -> dict[str, Any]:
        cert, key = starttls.make_certificate(self.procs, self.work / "tls")
        starttls.configure(self.postfix, self.mx, cert, key)
        return starttls.scenario(self, say)

    # -- scale (mxbackup only) -------------------------------------------------------------
    def scale(self) -> dict[str, Any]:
        n = self.p["scale_messages"]
        out: dict[str, Any] = {"messages": n}
        mx = self.mx
        try:
            with self.running(mx) as info:
                out["startup_empty_seconds"] = info["ready_seconds"]
                time.sleep(1.0)
                out["rss_empty_mb"] = _mb(mx.rss_kb()["VmRSS"])
            say(f"scale: generating {n} queued messages in {mx.spool}")
            if mx.spool.exists():
                shutil.rmtree(mx.spool)
            rc, so, se = self.procs.run(
                [
                    sys.executable,
                    str(BENCH / "scale.py"),
                    "generate",
                    "--spool",
                    str(mx.spool),
                    "--count",
                    str(n),
                    "--route",
                    DOMAIN,
                    "--rcpt",
                    RCPT,
                    "--sender",
                    SENDER,
                ],
                timeout=120 + n * 0.01,
                env=mx._env(),
            )
            if rc != 0:
                raise BenchError(f"scale.py generate: {se.strip()[-500:]}")
            out["generate"] = json.loads(so)
            with self.running(mx, fresh=False) as info:
                out["recovery_seconds"] = info["ready_seconds"]
                out["ready_line"] = info["ready_line"]
                out["loaded_seconds"] = out["recovery_seconds"]
                if "more being read" in info["ready_line"]:  # read while accepting mail
                    out["loaded_seconds"] = mx.queue_loaded(120 + n * 0.001)
                time.sleep(2.0)
                mem = mx.rss_kb()
                out["rss_mb"] = _mb(mem["VmRSS"])
                out["peak_rss_mb"] = _mb(mem["VmHWM"])
                out["queued_after_start"] = mx.queued()
            said = re.findall(r"(\d+) messages in the queue(?: \((\d+) more being read\))?",
                              out["ready_line"])  # fmt: skip
            if not said or sum(int(x or 0) for x in said[0]) != n:
                self.notes.append(
                    f"scale: the ready line does not say {n} messages: {out['ready_line']!r}"
                )
            say(
                f"scale: ready {out['recovery_seconds']} s with {n} queued, whole queue read "
                f"{out['loaded_seconds']} s, RSS {out['rss_mb']} MB"
            )
        except Exception as e:  # noqa: BLE001
            self.error("scale start-up", e)
        finally:
            if mx.spool.exists():
                shutil.rmtree(mx.spool, ignore_errors=True)
        try:
            counts = ",".join(str(c) for c in self.p["tick_counts"])
            rc, so, se = self.procs.run(
                [
                    sys.executable,
                    str(BENCH / "scale.py"),
                    "tick",
                    "--config",
                    str(mx.config),
                    "--counts",
                    counts,
                ],
                timeout=600,
                env=mx._env(),
            )
            if rc != 0:
                raise BenchError(f"scale.py tick: {se.strip()[-500:]}")
            tick = json.loads(so)
            errs = tick.pop("errors", [])
            if errs:
                raise BenchError(f"scheduler tick logged failures: {errs[:3]}")
            small, large = (str(c) for c in self.p["tick_counts"])
            tick["ratio_large_to_small"] = {
                k: _div(tick[large][k], tick[small][k])
                for k in ("idle_tick_us_median", "due100_tick_us_median")
            }
            out["tick"] = tick
            say(
                f"scale: tick idle {tick[small]['idle_tick_us_median']} us ({small}) vs "
                f"{tick[large]['idle_tick_us_median']} us ({large}); due-100 "
                f"{tick[small]['due100_tick_us_median']} vs {tick[large]['due100_tick_us_median']}"
            )
        except Exception as e:  # noqa: BLE001
            self.error("scale tick", e)
        return out


def _any_file(d: Path) -> bool:
    with os.scandir(d) as it:
        return any(True for _ in it)


def _mb(kb: int | None) -> float | None:
    return round(kb / 1024, 1) if kb is not None else None


def _div(a: Any, b: Any) -> float | None:
    if isinstance(a, int | float) and isinstance(b, int | float) and b:
        return round(a / b, 3)
    return None


def ratio(entry: dict[str, Any], key: str) -> float | None:
    """mxbackup / Postfix for one figure."""
    return _div(entry.get("mxbackup", {}).get(key), entry.get("postfix", {}).get(key))


# ---------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------
def _git_describe() -> str:
    try:
        head = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "mxbackup"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
        return head + ("+dirty" if dirty else "") if head else "?"
    except (OSError, subprocess.SubprocessError):
        return "?"


def machine_info(work: Path, postfix_version: str) -> dict[str, Any]:
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = status_meminfo()
    mount = {}
    with contextlib.suppress(OSError):
        best = ""
        for line in Path("/proc/mounts").read_text().splitlines():
            dev, mnt, fstype, opts = line.split()[:4]
            if (str(work) + "/").startswith(mnt.rstrip("/") + "/") and len(mnt) >= len(best):
                best = mnt
                mount = {"device": dev, "mountpoint": mnt, "fstype": fstype, "options": opts}
    try:
        import twisted

        twisted_version = twisted.__version__
    except ImportError:
        twisted_version = "?"
    return {
        "nproc": os.cpu_count(),
        "cpu_model": cpu,
        "memory_mb": mem,
        "kernel": platform.release(),
        "os": _os_release(),
        "postfix_version": postfix_version,
        "python_version": platform.python_version(),
        "twisted_version": twisted_version,
        "mxbackup_commit": _git_describe(),
        "work_filesystem": mount,
        "loadavg_at_start": _loadavg(),
    }


def status_meminfo() -> int | None:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    return None


def _os_release() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    return platform.platform()


def _loadavg() -> str:
    try:
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "?"


def build_table(r: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []

    def add(
        label: str,
        unit: str,
        better: str,
        pf: Any,
        mx: Any,
        rt: Any = None,
        pf_text: str | None = None,
        mx_text: str | None = None,
    ) -> None:
        rows.append(
            {
                "measurement": label,
                "unit": unit,
                "better": better,
                "postfix": pf,
                "mxbackup": mx,
                "ratio": rt if rt is not None else _div(mx, pf),
                "postfix_text": pf_text,
                "mxbackup_text": mx_text,
            }
        )

    acc = r.get("acceptance", {})
    for key, e in acc.items():
        size = key.split("_")[0].replace("KB", " KB")
        c = e["concurrency"]
        pf, mx = e.get("postfix", {}), e.get("mxbackup", {})
        add(
            f"acceptance {size} c={c}",
            f"msg/s, median [min–max] of {e['runs']}",
            "higher",
            pf.get("msgs_per_sec_median"),
            mx.get("msgs_per_sec_median"),
            pf_text=_spread(pf),
            mx_text=_spread(mx),
        )
    for key, e in acc.items():
        size = key.split("_")[0].replace("KB", " KB")
        pf, mx = e.get("postfix", {}), e.get("mxbackup", {})
        add(
            f"server CPU per message {size} c={e['concurrency']}",
            "ms CPU/msg (median)",
            "lower",
            _ms(pf.get("cpu_seconds_per_msg")),
            _ms(mx.get("cpu_seconds_per_msg")),
        )
    lat = r.get("latency", {})
    pf, mx = lat.get("postfix", {}), lat.get("mxbackup", {})
    c = lat.get("concurrency")
    add(f"end of DATA → 250, p50, c={c}", "ms", "lower", pf.get("p50_ms"), mx.get("p50_ms"))
    add(f"end of DATA → 250, p99, c={c}", "ms", "lower", pf.get("p99_ms"), mx.get("p99_ms"))
    add(
        f"throughput during the latency test, c={c}",
        "msg/s",
        "higher",
        pf.get("msgs_per_sec"),
        mx.get("msgs_per_sec"),
    )
    paced, rate = lat.get("paced", {}), lat.get("offered_msgs_per_sec")
    pf, mx = paced.get("postfix", {}), paced.get("mxbackup", {})
    for p in (50, 99):
        add(
            f"end of DATA → 250, p{p}, c={c}, both offered {rate or 0:g} msg/s",
            "ms",
            "lower",
            pf.get(f"p{p}_ms"),
            mx.get(f"p{p}_ms"),
        )
    starttls.table_rows(r, add, _spread, _ms)
    dr = r.get("drain", {})
    pf, mx = dr.get("postfix", {}), dr.get("mxbackup", {})
    n = dr.get("messages")
    add(
        f"drain {n} queued to smtp-sink",
        "msg/s, first delivery → queue empty",
        "higher",
        pf.get("msgs_per_sec"),
        mx.get("msgs_per_sec"),
    )
    add(
        f"drain {n} queued, whole",
        "msg/s, primary up → queue empty",
        "higher",
        pf.get("msgs_per_sec_from_up"),
        mx.get("msgs_per_sec_from_up"),
    )
    add(
        "primary up → first delivery",
        "s",
        "lower",
        pf.get("first_delivery_seconds"),
        mx.get("first_delivery_seconds"),
    )
    add(
        "drain CPU per message",
        "ms CPU/msg",
        "lower",
        _ms(pf.get("cpu_seconds_per_msg")),
        _ms(mx.get("cpu_seconds_per_msg")),
    )
    sc = r.get("scale", {})
    n = sc.get("messages") or 0
    add(f"start-up with {n:,} queued → ready", "s", "lower", None, sc.get("recovery_seconds"))
    add(
        f"start-up with {n:,} queued → whole queue read",
        "s",
        "lower",
        None,
        sc.get("loaded_seconds"),
    )
    add("start-up with an empty queue → ready", "s", "lower", None, sc.get("startup_empty_seconds"))
    add(f"resident memory with {n:,} queued", "MB (VmRSS)", "lower", None, sc.get("rss_mb"))
    tick = sc.get("tick", {})
    for cnt in sorted((k for k in tick if k.isdigit()), key=int):
        t = tick[cnt]
        add(
            f"scheduler tick, nothing due, {int(cnt):,} queued",
            "µs (median)",
            "lower",
            None,
            t.get("idle_tick_us_median"),
        )
        add(
            f"scheduler tick, 100 due, {int(cnt):,} queued",
            "µs (median)",
            "lower",
            None,
            t.get("due100_tick_us_median"),
        )
    return rows


def _ms(s: Any) -> float | None:
    return round(s * 1000, 3) if isinstance(s, int | float) else None


def _spread(e: dict[str, Any]) -> str | None:
    if "msgs_per_sec_median" not in e:
        return None
    return (
        f"{e['msgs_per_sec_median']:.0f} [{e['msgs_per_sec_min']:.0f}–{e['msgs_per_sec_max']:.0f}]"
    )


def _cell(v: Any, text: str | None) -> str:
    if text:
        return text
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.3g}" if abs(v) < 10 else f"{v:,.0f}" if abs(v) >= 100 else f"{v:.1f}"
    return str(v)


def render_markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        f"# mxbackup vs Postfix ({r['mode']} run)",
        "",
        f"Date: {r['date']} · machine: {m['nproc']} CPUs ({m['cpu_model']}), "
        f"{m['memory_mb']} MB RAM, kernel {m['kernel']}, {m['os']} · Postfix {m['postfix_version']}"
        f" · Python {m['python_version']}, Twisted {m['twisted_version']} · mxbackup "
        f"{m['mxbackup_commit']} · disk: {m['work_filesystem'].get('fstype', '?')} "
        f"({m['work_filesystem'].get('device', '?')}) · load average at start "
        f"{m['loadavg_at_start']} · run took {r['duration_seconds']:.0f} s",
        "",
        "Ratio = mxbackup / Postfix: above 1 is better for rates (msg/s), below 1 is better for"
        " times, CPU and memory (the *better* column says which). Both systems fsync before 250,"
        " run one after the other on the same ports and disk, loopback only.",
        "",
        "| measurement | unit | better | Postfix | mxbackup | ratio |",
        "|---|---|---|---:|---:|---:|",
    ]
    for row in r["table"]:
        rt = row["ratio"]
        lines.append(
            f"| {row['measurement']} | {row['unit']} | {row['better']} | "
            f"{_cell(row['postfix'], row['postfix_text'])} | "
            f"{_cell(row['mxbackup'], row['mxbackup_text'])} | "
            f"{f'{rt:.2f}' if isinstance(rt, float) else '–'} |"
        )
    lines += ["", "Notes:", ""]
    lines += [f"- {n}" for n in r["notes"]]
    if r["errors"]:
        lines += ["", "Errors (these figures are missing):", ""]
        lines += [f"- {e}" for e in r["errors"]]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------
def parse_args(argv: list[str]) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--quick", action="store_true", help="tiny counts (a smoke run: figures are meaningless)"
    )
    ap.add_argument(
        "--out",
        default=str(BENCH / "results"),
        help="where results.json and results.md go (default bench/results)",
    )
    ap.add_argument(
        "--workdir",
        default="/var/tmp",
        help="parent of the temporary work directory (a real disk, not tmpfs)",
    )
    ap.add_argument("--keep", action="store_true", help="keep the work directory (logs, queues)")
    ap.add_argument(
        "--lock-wait",
        type=float,
        default=1800,
        help="seconds to wait for another bench run to finish (default 1800)",
    )
    ap.add_argument(
        "--only",
        default="",
        help="comma-separated subset of acceptance,latency,drain,scale,starttls (debugging)",
    )
    return ap.parse_args(argv)


def acquire_lock(wait: float) -> Any:
    f = open(LOCK_FILE, "a")  # noqa: SIM115
    deadline = time.monotonic() + wait
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return f
        except BlockingIOError:
            if time.monotonic() >= deadline:
                say("another bench run holds " + LOCK_FILE)
                sys.exit(4)
            time.sleep(1)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    bootstrap()
    lock = acquire_lock(args.lock_wait)  # noqa: F841 - held until exit
    out_dir = Path(args.out).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)

    def on_term(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGHUP, on_term)

    procs = Processes()
    work = Path(tempfile.mkdtemp(prefix="mxbench-", dir=args.workdir))
    work.chmod(0o755)  # the postfix user and smtp-sink (nobody) must reach their directories
    started = time.monotonic()
    only = {s.strip() for s in args.only.split(",") if s.strip()}
    results: dict[str, Any] = {
        "schema": 1,
        "mode": "quick" if args.quick else "full",
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    bench: Bench | None = None
    try:
        bench = Bench(args, procs, work)
        say(f"work dir {work}, server port {bench.port}, primary port {bench.primary} (down)")
        results["machine"] = machine_info(work, bench.postfix.version())
        results["settings"] = {
            "server_port": bench.port,
            "primary_port": bench.primary,
            "workdir": str(work),
            "profile": {k: (list(v) if isinstance(v, tuple) else v) for k, v in bench.p.items()},
            "sizes_bytes": SIZES,
            "recipients_listed": len(RECIPIENTS),
            "postfix": "isolated instance (own config, queue and data directories), "
            "relay_domains + relay_recipient_maps + transport to the down primary, "
            "every other setting Postfix's default (fsync before 250)",
            "mxbackup": "route example.com -> primary with the same address list, "
            "max_connections_per_ip 200, min_free_space 0, "
            "delivery.probe_interval 1 (default 30), other delivery defaults",
        }
        bench.postfix.setup()
        bench.mx.setup()
        sections: list[tuple[str, Callable[[], dict[str, Any]]]] = [
            ("acceptance", bench.acceptance),
            ("latency", bench.latency),
            ("drain", bench.drain),
            ("scale", bench.scale),
            ("starttls", bench.starttls),
        ]
        for name, fn in sections:
            if only and name not in only:
                results[name] = {}
                continue
            say(f"--- {name}")
            try:
                results[name] = fn()
            except Exception as e:  # noqa: BLE001
                bench.error(name, e)
                results.setdefault(name, {})
    except BaseException as e:
        if bench is not None and not isinstance(e, Exception):
            bench.errors.append(f"interrupted: {type(e).__name__} {e}")
        raise
    finally:
        procs.cleanup()
        if bench is not None:
            results["duration_seconds"] = round(time.monotonic() - started, 1)
            results["errors"] = bench.errors
            results["notes"] = default_notes(bench) + bench.notes
            for name in ("acceptance", "latency", "drain", "scale", "starttls"):
                results.setdefault(name, {})
            results.setdefault("machine", {})
            try:
                results["table"] = build_table(results)
                (out_dir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
                (out_dir / "results.md").write_text(render_markdown(results))
                say(f"wrote {out_dir / 'results.json'} and {out_dir / 'results.md'}")
            except Exception as e:  # noqa: BLE001
                say(f"could not write the results: {type(e).__name__}: {e}")
                (out_dir / "results.json").write_text(
                    json.dumps(results, indent=2, default=str) + "\n"
                )
            if bench.errors:
                save_logs(bench, out_dir)
        if args.keep:
            say(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    if bench is not None:
        report = out_dir / "results.md"
        if report.exists():  # a partial run (--only) may have no table to show
            sys.stdout.write(report.read_text())
        return 1 if bench.errors else 0
    return 1


def default_notes(bench: Bench) -> list[str]:
    p = bench.p
    return [
        f"Acceptance: smtp-source -s C -m N -l SIZE (one message per connection, HELO, no "
        f"pipelining), N = {p['acceptance_messages']['5KB']} at 5 KB and "
        f"{p['acceptance_messages']['100KB']} at 100 KB, {p['runs']} runs per cell; each cell "
        "starts a fresh server with an empty queue; the primary is down throughout. msg/s = "
        "N / smtp-source wall time. CPU = the server's utime+stime from /proc over the run, "
        "until the server is idle again (Postfix: every process of the instance, reaped "
        "children included; mxbackup: twistd, all threads, and its spool process).",
        "STARTTLS: bench/tlsload.py (real STARTTLS, one message per connection, RSA-2048 "
        "certificate; 'new' = a full handshake each time, 'resumed' = each worker offers its "
        "previous session), c = 10 and 50, same N and runs as acceptance, after the other "
        "parts (it turns TLS on: Postfix smtpd_tls_security_level=may with its session cache "
        "and tickets; mxbackup server.tls). 'ECDSA beside RSA': then both offer an ECDSA P-256 "
        "certificate too (Postfix smtpd_tls_eccert_file, mxbackup server.tls.extra_certificate)"
        " and the client picks it; new sessions. The generator's own share of the machine's "
        "CPU is in the JSON (client_cpu_share): on 2 cores it is 20-45 %, so it competes with "
        "the server there.",
        f"Latency: our asyncio client (bench/latency.py), {p['latency_concurrency']} connections,"
        f" {p['latency_messages']} messages of 5 KB in all, one transaction after the other per"
        " connection; timed from sending the final CRLF.CRLF to reading the 250.",
        f"Drain: {p['drain_messages']} messages of 5 KB queued with the primary down and tried "
        "once, then smtp-sink comes up on the primary's port. Postfix needs `postqueue -f` "
        "(run at once after the sink is up) or it waits for its next queue run (queue_run_delay"
        " 300 s, minimal_backoff_time 300 s); mxbackup notices by itself through its probe, "
        "here with delivery.probe_interval = 1 s (default 30 s). Default concurrency: Postfix "
        "20 connections per destination, mxbackup 20 per target × 100 messages each. "
        f"Median of {p['drain_runs']} runs per system, alternating, each after a "
        f"{p['drain_pause']:.0f} s pause (ext4 slows file creation for 30 s after many "
        "deletions, and every drain deletes its queue).",
        f"Scale (mxbackup only): {p['scale_messages']:,} messages written straight into a spool "
        "(format of Envelope.to_json(), ids from new_queue_id, next attempt in the future); "
        "start-up = process start to the 'mxbackup ready' log line (from 20,000 queued the "
        "rest is read while mail is accepted: 'whole queue read' is the 'queue loaded' line), "
        "warm page cache. The tick "
        "is timed in-process with a Clock and disk work stubbed out.",
        "Figures are from a shared 2-core machine: differences under ~20 % are noise; compare "
        "only figures from the same run.",
    ]


def save_logs(bench: Bench, out_dir: Path) -> None:
    logs = out_dir / "logs"
    logs.mkdir(exist_ok=True)
    for server in (bench.postfix, bench.mx):
        with contextlib.suppress(OSError):
            lines = Path(server.log_path).read_text(errors="replace").splitlines()[-300:]
            (logs / f"{server.name}.log.tail").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
