"""The local admin interface: JSON lines over a UNIX socket (mode 0600).

One request per line, ``{"cmd": "list"}``, one answer per line, ``{"ok": true, "result": ...}``
or ``{"ok": false, "error": "..."}``.  The ``mxbackup queue`` and ``mxbackup reload`` commands
talk to it; only local users who can open the socket file (its owner) can.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, protocol
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver

from mxbackup.outbound.admin import QueueAdmin
from mxbackup.outbound.scheduler import Scheduler, target_key
from mxbackup.queue.envelope import Envelope
from mxbackup.queue.spool import Spool

log = Logger(namespace="mxbackup.control")

MAX_REQUEST = 65536


def describe(
    envelope: Envelope, now: float, reason: Callable[[str], str] = lambda key: ""
) -> dict[str, Any]:
    """One message; ``reason(target)`` says why its target is down now (the last failed
    attempt or probe, newer than a recipient's ``last_reply`` while the target stays down)."""
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
                "target_reason": reason(target_key(r)) if r.state == "pending" else "",
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

    def list(self) -> list[dict[str, Any]]:
        now = self.scheduler.clock.seconds()
        reason = self.scheduler.health.reason
        return [describe(e, now, reason) for _, e in sorted(self.scheduler.queue.items())]

    def show(self, id: str) -> dict[str, Any]:
        envelope = self._envelope(id)
        head = self.spool.read_message(id, 256 * 1024)
        end = head.find(b"\r\n\r\n")
        info = describe(envelope, self.scheduler.clock.seconds(), self.scheduler.health.reason)
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
        }

    def _envelope(self, id: str) -> Envelope:
        envelope = self.scheduler.queue.get(id)
        if envelope is None:
            raise KeyError(f"no message {id} in the queue")
        return envelope


_ALLOWED = {"list", "show", "flush", "hold", "release", "delete", "bounce", "reload", "stats"}


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
        if not isinstance(request, dict) or request.get("cmd") not in _ALLOWED:
            raise ValueError(f"unknown command; use one of {', '.join(sorted(_ALLOWED))}")
        args = {k: v for k, v in request.items() if k != "cmd" and isinstance(v, str | None)}
        log.info("control: {cmd} {args}", cmd=request["cmd"], args=args)
        return getattr(self.commands, request["cmd"])(**args)

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
