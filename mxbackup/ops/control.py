"""The local admin interface: JSON lines over a UNIX socket (mode 0600; 0660 and group
``mxbackup`` when that group exists, so its members need no root: ``ControlEndpoint``).

One request per line, ``{"cmd": "list"}``, one answer per line, ``{"ok": true, "result": ...}``
or ``{"ok": false, "error": "..."}``.  The ``mxbackup queue`` and ``mxbackup reload`` commands
talk to it; only local users who can open the socket file (its owner) can.

``{"cmd": "monitor"}`` turns the connection into a stream: after the answer, one JSON line per
log event (as ``mxbackup.logs.json`` writes them) until the client closes it.
"""

from __future__ import annotations

import json
import os
from typing import Any

from twisted.internet import defer, endpoints, protocol
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.logger import Logger
from twisted.protocols.basic import LineOnlyReceiver
from zope.interface import implementer

from mxbackup.ops.commands import Commands, describe
from mxbackup.ops.logs import render_json

log = Logger(namespace="mxbackup.control")

MAX_REQUEST = 65536


__all__ = ["Commands", "ControlEndpoint", "ControlFactory", "describe", "prepare_socket_path"]
GROUP = "mxbackup"  # the Debian package's system group: its members may use the socket

_ALLOWED = {
    "list", "count", "show", "flush", "hold", "release", "delete", "bounce", "reload", "stats",
    "pause", "resume", "status", "summary", "monitor", "loading",
}  # fmt: skip
# Read-only commands made in turns of the reactor over the whole queue: worth nothing once
# their client has gone (a monitor that polls with a short timeout must not pile them up).
_READ_IN_TURNS = {"list", "summary", "status", "stats"}
_ARGUMENT = (str, int, float, bool, type(None))


class ControlProtocol(LineOnlyReceiver):
    delimiter = b"\n"
    MAX_LENGTH = MAX_REQUEST

    def __init__(self, commands: Commands, publisher: Any = None) -> None:
        self.commands = commands
        self.publisher = publisher  # where log events are published (for ``monitor``)
        self._observer: Any = None
        self._reading: set[defer.Deferred] = set()  # listings under way (``_READ_IN_TURNS``)

    def lineReceived(self, line: bytes) -> None:
        if self._observer is not None:
            return  # a monitoring connection reads nothing more
        try:
            request = json.loads(line)
        except ValueError:
            request = None
        if isinstance(request, dict) and request.get("cmd") == "monitor":
            self._monitor()
            return
        d = defer.maybeDeferred(self._run, line)
        if isinstance(request, dict) and request.get("cmd") in _READ_IN_TURNS:
            self._reading.add(d)  # cancelled if the client goes away first
            d.addBoth(self._read, d)
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
        args = {k: v for k, v in request.items() if k != "cmd" and _argument(v)}
        log.info("control: {cmd} {args}", cmd=request["cmd"], args=args)
        extra = self.commands.extra.get(request["cmd"])
        return (extra or getattr(self.commands, request["cmd"]))(**args)

    def _monitor(self) -> None:
        """Stream every log event as a JSON line (``mxbackup monitor``) until the client
        goes away.  The events are those the server logs (no secrets: see ``ops.logs``)."""
        if self.publisher is None:
            self.sendLine(json.dumps({"ok": False, "error": "monitoring unavailable"}).encode())
            return
        self.sendLine(json.dumps({"ok": True, "result": "monitoring"}).encode())

        def observe(event: dict[str, Any]) -> None:
            if self.transport is not None:
                self.transport.write(render_json(event).encode("utf-8", "replace"))

        self._observer = observe
        self.publisher.addObserver(observe)

    def _read(self, result: Any, d: defer.Deferred) -> Any:
        self._reading.discard(d)
        return result

    def connectionLost(self, reason: Any = None) -> None:
        for d in list(self._reading):  # nobody to answer: no more slices of the reactor's time
            d.cancel()
        if self._observer is not None:
            self.publisher.removeObserver(self._observer)
            self._observer = None

    def lineLengthExceeded(self, line: bytes) -> None:
        self.sendLine(json.dumps({"ok": False, "error": "request too long"}).encode())
        self.transport.loseConnection()


def _message(error: BaseException) -> str:
    if isinstance(error, KeyError) and error.args:
        return str(error.args[0])
    if isinstance(error, TypeError):
        return f"bad arguments: {error}"
    return str(error) or error.__class__.__name__


def _argument(value: Any) -> bool:
    if isinstance(value, list):
        return all(isinstance(item, str) for item in value)
    return isinstance(value, _ARGUMENT)


class ControlFactory(protocol.Factory):
    def __init__(self, commands: Commands, publisher: Any = None) -> None:
        self.commands = commands
        self.publisher = publisher

    def buildProtocol(self, addr: Any) -> ControlProtocol:
        return ControlProtocol(self.commands, self.publisher)


def prepare_socket_path(path: str) -> None:
    """Remove a stale socket left by a crash (only a socket, never another file)."""
    import stat

    try:
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass


@implementer(IStreamServerEndpoint)
class ControlEndpoint:
    """The control socket at ``path``: created under umask 0177 (mode 0600 from the start,
    never wider), then, if the group ``group`` exists, given to it with mode 0660."""

    def __init__(self, reactor: Any, path: str, group: str = GROUP) -> None:
        self.reactor = reactor
        self.path = path
        self.group = group

    def listen(self, factory: Any) -> defer.Deferred:
        inner = endpoints.UNIXServerEndpoint(self.reactor, self.path, mode=0o600, wantPID=False)
        old = os.umask(0o177)  # bind() creates the socket file: owner only, from the start
        try:
            d = inner.listen(factory)  # binds now (listenUNIX is synchronous)
        finally:
            os.umask(old)
        return d.addCallback(self._share)

    def _share(self, port: Any) -> Any:
        gid = group_id(self.group)
        if gid is None:
            return port
        try:
            if os.stat(self.path).st_gid != gid:  # the unit's Group= already gives it (and
                os.chown(self.path, -1, gid)  # its system call filter refuses chown)
            os.chmod(self.path, 0o660)
        except OSError as e:
            log.warn(
                "control socket {path} stays 0600: cannot give it to group {group}: {error}",
                path=self.path,
                group=self.group,
                error=e.strerror or str(e),
            )
        return port


def group_id(name: str) -> int | None:
    import grp

    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None
