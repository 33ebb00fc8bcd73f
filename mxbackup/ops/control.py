"""The local admin interface: JSON lines over a UNIX socket (mode 0600).

One request per line, ``{"cmd": "list"}``, one answer per line, ``{"ok": true, "result": ...}``
or ``{"ok": false, "error": "..."}``.  The ``mxbackup queue`` and ``mxbackup reload`` commands
talk to it; only local users who can open the socket file (its owner) can.
"""

from __future__ import annotations

import bisect
import heapq
import json
import os
from itertools import islice
from typing import Any

from twisted.internet import defer, protocol, task
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

from mxbackup.outbound.admin import QueueAdmin
from mxbackup.outbound.scheduler import Scheduler, target_key
from mxbackup.queue.envelope import Envelope
from mxbackup.queue.spool import Spool

log = Logger(namespace="mxbackup.control")

MAX_REQUEST = 65536
# ``list`` with ``after`` pages through the sorted ids taken by the listing's first page, while
# that snapshot is this recent (seconds): sorting a million ids again for every page would
# stall the reactor for each one.
LIST_SNAPSHOT_TTL = 600.0
LIST_CHUNK = 50_000  # ids sorted per reactor turn when a listing starts


def describe(envelope: Envelope, now: float) -> dict[str, Any]:
    return {
        "id": envelope.id,
        "age": round(now - envelope.received_at, 3),
        "received_at": envelope.received_at,
        "size": envelope.size,
        "sender": envelope.sender,
        "held": envelope.held,
        "client_ip": envelope.client_ip,
        "recipients": [
            {
                "address": r.address,
                "route": r.route,
                "target": target_key(r),
                "state": r.state,
                "attempts": r.attempts,
                "next_attempt": r.next_attempt or None,
                "last_reply": r.last_reply,
            }
            for r in envelope.recipients
        ],
    }


class Commands:
    """What the socket can do; each returns a JSON-able result (or a Deferred of one)."""

    def __init__(self, scheduler: Scheduler, admin: QueueAdmin, spool: Spool, reload: Any) -> None:
        self.scheduler = scheduler
        self.admin = admin
        self.spool = spool
        self._reload = reload
        self.extra: dict[str, Any] = {}  # commands other modules register (ops/verifycmd.py)
        self._listing: tuple[float, list[list[str]]] = (0.0, [])  # (taken, sorted runs)

    def list(self, limit: str | None = None, after: str | None = None) -> Any:
        """Queued messages in queue-id (arrival) order: all of them, or (a Deferred of) a page
        of at most ``limit`` with ids after ``after`` (the last id of the previous page).  A
        page costs its own size, not the queue's: a listing's first page copies the ids and
        sorts them in runs of LIST_CHUNK, one run per reactor turn (a million: one 40 ms copy,
        then 5 ms turns), and the following pages bisect those runs and merge them; messages
        gone since are skipped, those queued since are not shown (they would sort after the
        snapshot's last id anyway)."""
        if limit is None and after is None:
            now = self.scheduler.clock.seconds()
            return [describe(e, now) for _, e in sorted(self.scheduler.queue.items())]
        count = max(0, int(limit)) if limit is not None else len(self.scheduler.queue)
        taken, runs = self._listing
        if after is None or not 0 <= self.scheduler.clock.seconds() - taken < LIST_SNAPSHOT_TTL:
            d = self._snapshot()
        else:
            d = defer.succeed(runs)
        return d.addCallback(self._page, after, count)

    def _snapshot(self) -> defer.Deferred:
        clock = self.scheduler.clock
        taken = clock.seconds()
        ids = list(self.scheduler.queue)  # one copy: the queue changes between turns
        runs: list[list[str]] = []

        def sort_some(start: int) -> Any:
            runs.append(sorted(ids[start : start + LIST_CHUNK]))
            if start + LIST_CHUNK < len(ids):
                return task.deferLater(clock, 0, sort_some, start + LIST_CHUNK)
            self._listing = (taken, runs)
            return runs

        return defer.maybeDeferred(sort_some, 0)

    def _page(self, runs: list[list[str]], after: str | None, count: int) -> list[dict[str, Any]]:
        now = self.scheduler.clock.seconds()
        queue = self.scheduler.queue
        tails = [
            map(r.__getitem__, range(bisect.bisect_right(r, after) if after else 0, len(r)))
            for r in runs
        ]  # lazily: a page reads its own ids, not the runs' tails
        envelopes = (queue.get(qid) for qid in heapq.merge(*tails))
        return [describe(e, now) for e in islice(filter(None, envelopes), count)]

    def count(self) -> int:
        """Messages in the queue: O(1) (``stats`` also works out the oldest one's age, which
        looks at every message)."""
        return len(self.scheduler.queue)

    def show(self, id: str) -> dict[str, Any]:
        envelope = self._envelope(id)
        head = self.spool.read_message(id, 256 * 1024)
        end = head.find(b"\r\n\r\n")
        info = describe(envelope, self.scheduler.clock.seconds())
        info["headers"] = head[: end if end >= 0 else len(head)].decode("utf-8", "replace")
        info["params"] = envelope.params
        return info

    def flush(self, id: str | None = None, route: str | None = None) -> dict[str, Any]:
        if id:
            self._envelope(id)
            self.admin.flush_message(id)
            return {"flushed": 1}
        if route:
            keys = self.scheduler.keys_for_domain(route.lower().rstrip("."))
            if not keys and route.lower() in self.scheduler.depth_by_target():
                keys = [route.lower()]
            if not keys:
                raise KeyError(f"no route for {route}")
            return {"flushed": sum(self.scheduler.flush(k) for k in keys)}
        return {"flushed": self.scheduler.flush()}

    def hold(self, id: str) -> Any:
        return self.admin.hold(id)

    def release(self, id: str) -> Any:
        return self.admin.release(id)

    def delete(self, id: str) -> Any:
        return self.admin.delete(id)

    def bounce(self, id: str) -> Any:
        return self.admin.bounce_now(id)

    def reload(self) -> Any:
        return self._reload()

    def stats(self) -> dict[str, Any]:
        s = self.scheduler.stats
        return {
            "accepted": s.accepted,
            "refused": dict(s.refused),
            "delivered": s.delivered,
            "deferred": s.deferred,
            "bounced": s.bounced,
            "dsn_sent": s.dsn_sent,
            "queue": len(self.scheduler.queue),
            "depth_by_target": self.scheduler.depth_by_target(),
            "oldest_age": self.scheduler.oldest_age(),
            "queued_by_route": {
                r.domain: {
                    "queued": self.scheduler.backlog.depth(r.domain),
                    "max": r.max_queued_messages,
                }
                for r in self.scheduler.config.routes
            },  # fmt: skip
        }

    def _envelope(self, id: str) -> Envelope:
        envelope = self.scheduler.queue.get(id)
        if envelope is None:
            raise KeyError(f"no message {id} in the queue")
        return envelope


_ALLOWED = {
    "list",
    "count",
    "show",
    "flush",
    "hold",
    "release",
    "delete",
    "bounce",
    "reload",
    "stats",
}


class ControlProtocol(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = MAX_REQUEST

    def __init__(self, commands: Commands) -> None:
        self.commands = commands

    def lineReceived(self, line: bytes) -> None:
        d = defer.maybeDeferred(self._run, line)
        d.addCallbacks(
            lambda result: {"ok": True, "result": result},
            lambda f: {"ok": False, "error": _message(f.value)},
        )
        d.addCallback(lambda answer: self.sendLine(json.dumps(answer).encode()))

    def _run(self, line: bytes) -> Any:
        request = json.loads(line)
        allowed = _ALLOWED | set(self.commands.extra)
        if not isinstance(request, dict) or request.get("cmd") not in allowed:
            raise ValueError(f"unknown command; use one of {', '.join(sorted(allowed))}")
        args = {k: v for k, v in request.items() if k != "cmd" and isinstance(v, str | None)}
        log.info("control: {cmd} {args}", cmd=request["cmd"], args=args)
        extra = self.commands.extra.get(request["cmd"])
        return (extra or getattr(self.commands, request["cmd"]))(**args)

    def lineLengthExceeded(self, line: bytes) -> None:
        self.sendLine(json.dumps({"ok": False, "error": "request too long"}).encode())
        self.transport.loseConnection()


def _message(error: BaseException) -> str:
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    if isinstance(error, TypeError):
        return f"bad arguments: {error}"
    return str(error) or error.__class__.__name__


class ControlFactory(protocol.Factory):
    def __init__(self, commands: Commands) -> None:
        self.commands = commands

    def buildProtocol(self, addr: Any) -> ControlProtocol:
        return ControlProtocol(self.commands)


def prepare_socket_path(path: str) -> None:
    """Remove a stale socket left by a crash (only a socket, never another file)."""
    import stat

    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
