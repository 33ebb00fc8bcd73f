"""Private Postfix instances for end-to-end tests: a sender that delivers by MX lookup, and a
primary that stores what it receives in a maildir.  Each has its own directories, its own
master (no chroot), listens on one loopback address, and is stopped by the test.

The sender resolves names through libc, which reads /etc/resolv.conf and asks port 53 only:
it runs in a mount namespace of its own (``unshare -m``) where a resolv.conf naming the test's
DNS server (on another 127/8 address, port 53) is bind-mounted over /etc/resolv.conf, so every
lookup stays on loopback and the host's resolver is never asked.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

SBIN = Path("/usr/sbin")

MASTER_CF = """\
{address}:{port} inet n  -       n       -       -       smtpd
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
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
virtual   unix  -       n       n       -       -       virtual
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
"""

COMMON = """\
compatibility_level = 3.6
config_directory = {etc}
queue_directory = {queue}
data_directory = {data}
meta_directory = /etc/postfix
myhostname = {hostname}
mydomain = test
myorigin = $myhostname
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions =
smtpd_banner = $myhostname ESMTP
maillog_file = {maillog}
maillog_file_prefixes = {maillog}
biff = no
"""

# The sender: example.com by MX lookup (its MX hosts at {port}, not 25: Postfix's
# "smtp:domain:port" looks up the MX records and connects to that port on each of them).
SENDER = """\
relay_domains =
transport_maps = inline:{{ {domain}=smtp:{domain}:{mx_port} }}
smtp_host_lookup = dns
smtp_dns_support_level = enabled
disable_dns_lookups = no
smtp_connect_timeout = 5s
"""

# The primary: every address of example.com goes to one maildir.
PRIMARY = """\
virtual_mailbox_domains = {domain}
virtual_mailbox_base = {boxes}
virtual_mailbox_maps = static:box/
virtual_uid_maps = static:{uid}
virtual_gid_maps = static:{gid}
virtual_minimum_uid = 100
"""


def available() -> str | None:
    """Why these tests cannot run here (None: they can)."""
    if os.geteuid() != 0:
        return "needs root (a private Postfix instance, a mount namespace, DNS on port 53)"
    if not (SBIN / "postfix").exists():
        return "Postfix is not installed (tests/install-system-deps.sh installs it)"
    if shutil.which("unshare") is None:
        return "unshare(1) is missing"
    probe = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "true"], capture_output=True, check=False
    )
    if probe.returncode != 0:
        return f"no mount namespace here: {probe.stderr.decode().strip()}"
    return None


class Postfix:
    def __init__(self, root: Path, name: str, address: str, port: int, extra: str) -> None:
        self.dir = root / name
        self.etc, self.queue, self.data = self.dir / "etc", self.dir / "queue", self.dir / "data"
        self.maillog = self.dir / "maillog"
        self.address, self.port = address, port
        self.master_pid: int | None = None
        for d in (self.etc, self.queue, self.data):
            d.mkdir(parents=True, exist_ok=True)
        shutil.chown(self.data, user="postfix")
        main = COMMON.format(
            etc=self.etc,
            queue=self.queue,
            data=self.data,
            hostname=f"{name}.test",
            address=address,
            maillog=self.maillog,
        )
        (self.etc / "main.cf").write_text(main + extra)
        (self.etc / "master.cf").write_text(MASTER_CF.format(address=address, port=port))

    def start(self, resolv_conf: Path | None = None) -> None:
        command = f"exec {SBIN}/postfix -c {self.etc} start"
        if resolv_conf is not None:  # its own /etc/resolv.conf, in a mount namespace
            command = f"mount --bind {resolv_conf} /etc/resolv.conf && {command}"
            argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", command]
        else:
            argv = ["sh", "-c", command]
        done = subprocess.run(argv, capture_output=True, timeout=60, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"postfix start: {done.stderr.decode()}{done.stdout.decode()}")
        pidfile = self.queue / "pid" / "master.pid"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and self.master_pid is None:
            with contextlib.suppress(OSError, ValueError, IndexError):
                self.master_pid = int(pidfile.read_text().split()[0])
            time.sleep(0.02)  # polling for the daemon's pid file
        if self.master_pid is None:
            raise RuntimeError("postfix master did not write its pid")

    def stop(self) -> None:
        """SIGTERM to the master (what ``postfix stop`` does), which stops its children."""
        pid, self.master_pid = self.master_pid, None
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                os.killpg(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGKILL)

    def queued(self) -> int:
        return sum(
            len(files)
            for sub in ("incoming", "active", "deferred", "hold", "maildrop")
            for _, _, files in os.walk(self.queue / sub)
        )

    def log(self) -> str:
        return self.maillog.read_text(errors="replace") if self.maillog.exists() else ""
