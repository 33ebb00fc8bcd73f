"""The ``mxbackup`` command's side of the control socket: where it is, one request and its
answer, or a stream of events (``monitor``)."""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
from collections.abc import Iterator
from typing import Any

from mxbackup.config import ConfigError, load

DEFAULT_CONFIGS = ("/etc/mxbackup/mx.yaml", "etc/mx.yaml")


class Unreachable(Exception):
    pass


class Refused(Exception):
    pass


def socket_path(args: argparse.Namespace) -> str:
    if args.socket:
        return str(args.socket)
    candidates = [args.config] if args.config else [c for c in DEFAULT_CONFIGS if os.path.exists(c)]
    if not candidates:
        raise Unreachable("no configuration found; give --config FILE or --socket PATH")
    try:
        return load(candidates[0]).control_socket
    except ConfigError as exc:
        # A broken file (say, before a reload) may still tell where the socket is.
        path = _socket_from_raw(candidates[0])
        if path is None:
            raise Refused("\n".join(exc.errors)) from None
        return path


def _socket_from_raw(filename: str) -> str | None:
    import yaml

    try:
        with open(filename, encoding="utf-8") as f:
            server = (yaml.safe_load(f) or {}).get("server") or {}
        if server.get("control_socket"):
            return str(server["control_socket"])
        return os.path.join(str(server["spool"]), "control.sock")
    except Exception:  # noqa: BLE001 - any problem: we cannot tell
        return None


def _connect(path: str, timeout: float | None) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(path)
    except OSError as exc:
        s.close()
        raise Unreachable(f"cannot reach the server at {path}: {exc.strerror or exc}") from None
    return s


def request(path: str, cmd: str, timeout: float = 30.0, **args: Any) -> Any:
    """One request to the control socket; returns the result or raises RuntimeError."""
    with _connect(path, timeout) as s:
        try:
            s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            chunks: list[bytes] = []
            while not (chunks and chunks[-1].endswith(b"\n")):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                chunks.append(chunk)
        except OSError as exc:
            raise Unreachable(f"lost the server at {path}: {exc.strerror or exc}") from None
    answer = json.loads(b"".join(chunks) or b"{}")
    if not answer.get("ok"):
        raise RuntimeError(answer.get("error", "no answer"))
    return answer.get("result")


def stream(path: str, cmd: str) -> Iterator[dict[str, Any]]:
    """A streaming request (``monitor``): yields each event until the server closes."""
    with _connect(path, None) as s:
        s.sendall(json.dumps({"cmd": cmd}).encode() + b"\n")
        lines = s.makefile("rb")
        first = json.loads(lines.readline() or b"{}")
        if not first.get("ok"):
            raise RuntimeError(first.get("error", "no answer"))
        print(f"mxbackup: following {path} (Ctrl-C to stop)", file=sys.stderr, flush=True)
        for line in lines:
            yield json.loads(line)


def talk(args: argparse.Namespace, cmd: str, **kw: Any) -> tuple[int, Any]:
    """A request; the exit status (0, 1 refused, 3 unreachable) and the result."""
    try:
        return 0, request(socket_path(args), cmd, **kw)
    except Unreachable as exc:
        print(f"mxbackup: {exc}", file=sys.stderr)
        return 3, None
    except (RuntimeError, Refused) as exc:
        for line in str(exc).splitlines():
            print(f"mxbackup: {line}", file=sys.stderr)
        return 1, None
