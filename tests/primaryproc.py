"""Recording primaries in a process of their own, for end-to-end tests that run the real twistd
from blocking test code (no reactor in the test process).

``python tests/primaryproc.py SPEC OUT``: SPEC is a JSON file, a list of primaries::

    [{"name": "modern", "extensions": ["PIPELINING", "8BITMIME", "DSN", "SMTPUTF8"],
      "rcpt_replies": {"x@example.com": [550, "5.1.1 no such user"]}}, ...]

Each is a ``fakeprimary.FakePrimary`` on an ephemeral 127.0.0.1 port with exactly the EHLO
extensions given.  The process writes ``OUT/ports.json`` ({name: port}) once all listen, and
``OUT/<name>.json`` whenever that primary completed a transaction: a list of
``{"mail", "rcpts", "message", "helo", "connection"}``, and ``OUT/<name>.commands.json``, every
command line it got; byte strings as latin-1 text (so any octet survives the round trip).
A file ``OUT/sync-N`` is renamed ``OUT/ack-N`` once everything completed before it appeared
is written.  SIGTERM stops it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent


def as_json(t: Any) -> dict[str, Any]:
    return {
        "helo": t.helo.decode("latin-1"),
        "mail": t.mail.decode("latin-1"),
        "rcpts": [r.decode("latin-1") for r in t.rcpts],
        "message": t.message.decode("latin-1"),
        "connection": t.connection,
    }


def write_atomically(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def main(spec_path: str, out: str) -> None:
    from twisted.internet import reactor, task

    sys.path.insert(0, str(HERE))
    from fakeprimary import FakePrimary

    out_dir = Path(out)
    primaries: dict[str, FakePrimary] = {}
    for spec in json.loads(Path(spec_path).read_text()):
        primary = FakePrimary(
            pipelining=False,
            size=None,
            eight_bit=False,
            hostname=f"{spec['name']}.primary.test",
            rcpt_replies={k: tuple(v) for k, v in spec.get("rcpt_replies", {}).items()},
        )
        primary.extensions = [e.encode() for e in spec["extensions"]]
        primaries[spec["name"]] = primary.listen(reactor)
    write_atomically(out_dir / "ports.json", {n: p.portnum for n, p in primaries.items()})
    written: dict[str, tuple[int, int]] = dict.fromkeys(primaries, (0, 0))

    def dump() -> None:
        for name, primary in primaries.items():
            done, commands = primary.complete, primary.commands()
            if (len(done), len(commands)) != written[name]:
                # commands first: a test that saw the transaction finds its commands too
                lines = [c.decode("latin-1") for c in commands]
                write_atomically(out_dir / f"{name}.commands.json", lines)
                write_atomically(out_dir / f"{name}.json", [as_json(t) for t in done])
                written[name] = (len(done), len(commands))
        for request in out_dir.glob("sync-*"):  # everything up to now is written: say so
            os.replace(request, out_dir / ("ack-" + request.name[5:]))

    task.LoopingCall(dump).start(0.02)
    reactor.run()


# -- the test's side: start the process, read what it recorded -------------------------------
def wait_for(predicate: Any, timeout: float = 15.0) -> Any:
    """Poll for what other processes produce (not a sleep for time to pass)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    return None


class Primaries:
    """The primaries of ``spec`` running in their own process, recording into ``directory``."""

    def __init__(self, directory: Path, spec: list[dict[str, Any]]) -> None:
        self.dir = directory
        spec_path = directory / "spec.json"
        spec_path.write_text(json.dumps(spec))
        self.log = open(directory / "primaries.log", "wb")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, str(HERE / "primaryproc.py"), str(spec_path), str(directory)],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            env=dict(os.environ, PYTHONPATH=str(HERE.parent)),
        )
        started = wait_for((directory / "ports.json").exists, 20)
        assert started, (directory / "primaries.log").read_text()
        self.ports: dict[str, int] = json.loads((directory / "ports.json").read_text())
        self.syncs = 0

    def transactions(self, name: str) -> list[dict[str, Any]]:
        path = self.dir / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else []

    def commands(self, name: str) -> list[str]:
        path = self.dir / f"{name}.commands.json"
        return json.loads(path.read_text()) if path.exists() else []

    def sync(self) -> None:
        """Wait until everything the primaries completed so far is in their files."""
        self.syncs += 1
        (self.dir / f"sync-{self.syncs}").touch()
        assert wait_for((self.dir / f"ack-{self.syncs}").exists, 10)

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        self.proc.wait(10)
        self.log.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
