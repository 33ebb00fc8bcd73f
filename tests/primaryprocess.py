"""The scripted primary (``fakeprimary.FakePrimary``) as a process of its own, for the e2e tests
that drive the real twistd: it can be killed (the primary goes down) and started again on the
same port, and it writes every command it sees to a log file the test reads.

``python tests/primaryprocess.py --port N --log FILE [--refuse ADDRESS=CODE TEXT ...]``
prints ``listening PORT`` once it listens.  Log lines: ``<session>\\t<command>``, and
``<session>\\t.DELIVERED <rcpt> ...`` when a message's final dot arrived.

``PrimaryProcess`` (the test side) starts and kills it and reads the log: ``callouts()`` are
the RCPTs of transactions that never reached DATA, ``deliveries()`` the recipients of complete
messages.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    sys.path.insert(0, str(HERE))
    from fakeprimary import FakePrimary, FakePrimaryProtocol
    from twisted.internet import reactor

    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--log", required=True)
    parser.add_argument("--refuse", action="append", default=[], metavar="ADDRESS=CODE TEXT")
    args = parser.parse_args()
    replies = {}
    for item in args.refuse:
        address, _, reply = item.partition("=")
        code, _, text = reply.partition(" ")
        replies[address] = (int(code), text)
    log = open(args.log, "a", buffering=1)  # noqa: SIM115 - line buffered, kept open

    class Logged(FakePrimaryProtocol):
        def lineReceived(self, line: bytes) -> None:
            log.write(f"{self.session.number}\t{line.decode('utf-8', 'replace')}\n")
            super().lineReceived(line)

        def rawDataReceived(self, data: bytes) -> None:
            before = len(self.factory.complete)
            super().rawDataReceived(data)
            for txn in self.factory.complete[before:]:
                rcpts = " ".join(r.decode() for r in txn.rcpts)
                log.write(f"{self.session.number}\t.DELIVERED {rcpts}\n")

    primary = FakePrimary(rcpt_replies=replies)
    primary.protocol = Logged
    port = reactor.listenTCP(args.port, primary, interface="127.0.0.1")
    print(f"listening {port.getHost().port}", flush=True)
    reactor.run()


class PrimaryProcess:
    """The test's handle: ``start()`` (again after ``kill()``: the same port), ``kill()``."""

    def __init__(self, log: Path, refuse: dict[str, str]) -> None:
        self.log = log
        self.refuse = refuse
        self.port = 0
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> PrimaryProcess:
        refuse = [f"--refuse={a}={r}" for a, r in self.refuse.items()]
        self.proc = subprocess.Popen(
            [sys.executable, __file__, f"--port={self.port}", f"--log={self.log}", *refuse],
            stdout=subprocess.PIPE,
            text=True,
            env=dict(os.environ, PYTHONPATH=str(HERE.parent)),
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # waits for it to listen, not for time
        if not line.startswith("listening "):
            self.kill()
            raise RuntimeError(f"the scripted primary did not start: {line!r}")
        self.port = int(line.split()[1])
        return self

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def lines(self) -> list[tuple[str, str]]:
        if not self.log.exists():
            return []
        out = []
        for line in self.log.read_text().splitlines():
            session, _, command = line.partition("\t")
            out.append((session, command))
        return out

    def _transactions(self) -> list[tuple[list[str], bool]]:
        """(RCPT addresses, reached DATA) of every MAIL transaction, in order."""
        open_txn: dict[str, tuple[list[str], bool]] = {}
        done: list[tuple[list[str], bool]] = []
        for session, command in self.lines():
            verb = command.split(" ", 1)[0].upper()
            if verb in ("MAIL", "RSET", "QUIT", "EHLO", "HELO") and session in open_txn:
                done.append(open_txn.pop(session))
            if verb == "MAIL":
                open_txn[session] = ([], False)
            elif verb == "RCPT" and session in open_txn:
                addr = command[command.find("<") + 1 : command.find(">")]
                open_txn[session][0].append(addr.lower())
            elif verb == "DATA" and session in open_txn:
                open_txn[session] = (open_txn[session][0], True)
        return done + list(open_txn.values())

    def callouts(self, address: str | None = None) -> int:
        """RCPTs (of ``address``, or all) in transactions that never reached DATA."""
        return sum(
            1
            for rcpts, data in self._transactions()
            if not data
            for a in rcpts
            if address is None or a == address.lower()
        )

    def data_commands(self) -> int:
        """DATA commands seen, in every session (a callout never sends one)."""
        return sum(1 for _, c in self.lines() if c.upper() == "DATA")

    def messages(self) -> int:
        """Complete messages received."""
        return sum(1 for _, c in self.lines() if c.startswith(".DELIVERED "))

    def deliveries(self) -> list[str]:
        """Recipients of complete messages, in order."""
        out: list[str] = []
        for _, command in self.lines():
            if command.startswith(".DELIVERED "):
                out.extend(command.split()[1:])
        return out

    def wait_delivered(self, address: str, timeout: float = 15.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if address in self.deliveries():
                return True
            time.sleep(0.05)  # polling another process's outcome, not waiting for time
        return False


if __name__ == "__main__":
    main()
