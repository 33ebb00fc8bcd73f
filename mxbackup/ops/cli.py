"""The ``mxbackup`` command line.

``mxbackup check-config FILE`` validates a configuration without starting anything: it prints
``OK: FILE (N routes, M ip ranges)`` and exits 0, or prints one line per problem on stderr and
exits 1.

``mxbackup queue list|show|flush|hold|release|delete|bounce`` and ``mxbackup reload`` talk to
the running server over its control socket (``server.control_socket``, default
``<spool>/control.sock``), found through ``--config`` (default ``/etc/mxbackup/mx.yaml`` when
it exists, else ``etc/mx.yaml``) or given with ``--socket``.  Exit status: 0 done, 1 refused
(the server says why), 2 usage, 3 the server cannot be reached.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from collections.abc import Iterator
from typing import Any

from mxbackup.config import ConfigError, load
from mxbackup.ops.verifycli import add_verify_parser, route_counts
from mxbackup.preflight import preflight

DEFAULT_CONFIGS = ("/etc/mxbackup/mx.yaml", "etc/mx.yaml")


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (console scripts pass it to sys.exit)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help or a usage error: argparse has printed the message
        return exc.code if isinstance(exc.code, int) else 2
    try:
        status: int = args.run(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``... | head``): not an error worth a traceback.  Point
        # stdout at /dev/null so that Python's own flush at exit meets no pipe either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # what a shell reports for a command ended by SIGPIPE
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mxbackup", description="A backup MX built on Twisted.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check-config",
        help="validate a configuration file and report every problem",
        description="Validate a configuration file; print every problem, one per line.",
    )
    check.add_argument("file", metavar="FILE", help="the YAML configuration, e.g. etc/mx.yaml")
    check.set_defaults(run=_check_config)

    hashing = commands.add_parser(
        "hash-password",
        help="print the bcrypt hash of a password, for accounts[].password_hash",
        description="Read a password (asked twice on a terminal, else one line of stdin) "
        "and print its bcrypt hash for accounts[].password_hash.",
    )
    hashing.add_argument(
        "--rounds", type=int, default=12, choices=range(4, 32), metavar="4..31",
        help="bcrypt cost (default 12)",
    )  # fmt: skip
    hashing.set_defaults(run=_hash_password)

    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--config", help="the server's configuration (to find its socket)")
    where.add_argument("--socket", help="the control socket, instead of --config")

    queue = commands.add_parser("queue", help="inspect and steer the queue of the running server")
    actions = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[where], help="list queued messages")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument(
        "--limit", type=int, default=LIST_LIMIT, metavar="N",
        help=f"show the N oldest messages (default {LIST_LIMIT}) and how many more there are",
    )  # fmt: skip
    listing.add_argument(
        "--all", action="store_true", help="every message, fetched page by page as printed"
    )
    listing.set_defaults(run=_queue_list)
    show = actions.add_parser("show", parents=[where], help="envelope and headers of a message")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    show.set_defaults(run=_queue_show)
    flush = actions.add_parser("flush", parents=[where], help="try now: one message, a route, all")
    flush.add_argument("id", nargs="?")
    flush.add_argument("--route", metavar="DOMAIN", help="every message for this route")
    flush.set_defaults(run=_queue_flush)
    for name, text in (
        ("hold", "keep a message in the queue without trying it"),
        ("release", "undo hold, and try the message now"),
        ("delete", "remove a message, telling nobody"),
        ("bounce", "give up on a message now: the sender gets the DSN"),
    ):
        action = actions.add_parser(name, parents=[where], help=text)
        action.add_argument("id")
        action.set_defaults(run=_queue_simple, cmd=name)
    add_verify_parser(commands, where, _talk)
    reload = commands.add_parser(
        "reload", parents=[where], help="re-read the configuration and address lists"
    )
    reload.set_defaults(run=_reload)
    return parser


def _check_config(args: argparse.Namespace) -> int:
    try:
        config = load(args.file)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    checked = preflight(config)  # what the server checks before it listens
    for line in checked.errors:
        print(line, file=sys.stderr)
    for line in checked.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if checked.errors:
        return 1
    print(f"OK: {args.file} ({len(config.routes)} routes, {len(config.ip_ranges)} ip ranges)")
    return 0


# -- talking to the running server ------------------------------------------------------------
class Unreachable(Exception):
    pass


def _socket_path(args: argparse.Namespace) -> str:
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


class Refused(Exception):
    pass


def request(path: str, cmd: str, timeout: float = 30.0, **args: Any) -> Any:
    """One request to the control socket; returns the result or raises RuntimeError."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
    except OSError as exc:
        raise Unreachable(f"cannot reach the server at {path}: {exc.strerror or exc}") from None
    answer = json.loads(data)
    if not answer.get("ok"):
        raise RuntimeError(answer.get("error", "refused"))
    return answer.get("result")


def _talk(args: argparse.Namespace, cmd: str, **kw: Any) -> tuple[int, Any]:
    try:
        return 0, request(_socket_path(args), cmd, **kw)
    except Unreachable as exc:
        print(f"mxbackup: {exc}", file=sys.stderr)
        return 3, None
    except (RuntimeError, Refused) as exc:
        for line in str(exc).splitlines():
            print(f"mxbackup: {line}", file=sys.stderr)
        return 1, None


LIST_LIMIT = 1000
LIST_PAGE = 1000  # messages per request with --all: the server answers each page quickly


def _pages(args: argparse.Namespace) -> Iterator[list[dict[str, Any]]]:
    """The messages, page by page as the server sends them (``--all``: page after page,
    each a short request, so the server stays responsive in between; else up to
    ``--limit``).  Raises _Failed with the exit status."""
    wanted = None if args.all else max(0, args.limit)
    got, after = 0, None
    while wanted is None or got < wanted:
        size = LIST_PAGE if wanted is None else min(LIST_PAGE, wanted - got)
        kw: dict[str, Any] = {"limit": str(size)}
        if after is not None:
            kw["after"] = after
        status, page = _talk(args, "list", **kw)
        if status:
            raise _Failed(status)
        if page:
            yield page
        if len(page) < size:
            return
        got, after = got + len(page), page[-1]["id"]


class _Failed(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


def _queue_list(args: argparse.Namespace) -> int:
    listed: list[dict[str, Any]] = []  # kept for the per-route summary (not with --all)
    count = 0
    try:
        for page in _pages(args):
            if args.json:
                for m in page:
                    print(("," if count else "[") + json.dumps(m, indent=2))
                    count += 1
                continue
            if not count:
                print(f"{'ID':<20} {'AGE':>8} {'SIZE':>9}  SENDER")
            _print_messages(page)
            count += len(page)
            listed += [] if args.all else page
    except _Failed as failed:
        return failed.status
    if args.json:
        print("]" if count else "[]")
    elif not count:
        print("Mail queue is empty")
    else:
        _list_summary(args, count, listed)
    return 0


def _list_summary(args: argparse.Namespace, count: int, listed: list[dict[str, Any]]) -> None:
    print(f"-- {count} message(s)")
    more = 0
    if not args.all and count >= args.limit:
        status, queued = _talk(args, "count")
        more = 0 if status else max(0, queued - count)
    if more:
        print(f"-- {more} more message(s) not shown: --limit N or --all to list them")
    elif not args.all:
        for route, n in route_counts(listed).items():
            print(f"-- {route}: {n} message(s) queued")


def _print_messages(messages: list[dict[str, Any]]) -> None:
    now = time.time()
    for m in messages:
        held = "  (held)" if m["held"] else ""
        print(f"{m['id']:<20} {_age(m['age']):>8} {m['size']:>9}  <{m['sender']}>{held}")
        for r in m["recipients"]:
            nxt = r["next_attempt"]
            when = f"next in {_age(nxt - now)}" if nxt and r["state"] == "pending" else ""
            print(f"{'':<20} {r['state']:>8} {r['attempts']:>3} tries  <{r['address']}> {when}")
            if r["last_reply"]:
                print(f"{'':<33}{r['last_reply'][:200]}")


def _age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _queue_show(args: argparse.Namespace) -> int:
    status, info = _talk(args, "show", id=args.id)
    if status:
        return status
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    headers = info.pop("headers")
    for key, value in info.items():
        if key != "recipients":
            print(f"{key}: {value}")
    for r in info["recipients"]:
        print(
            f"recipient: <{r['address']}> {r['state']} attempts={r['attempts']} "
            f"target={r['target']} last_reply={r['last_reply']!r}"
        )
    print()
    print(headers)
    return 0


def _queue_flush(args: argparse.Namespace) -> int:
    status, result = _talk(args, "flush", id=args.id, route=args.route)
    if not status:
        print(f"flushed {result['flushed']} message(s)")
    return status


def _queue_simple(args: argparse.Namespace) -> int:
    status, _ = _talk(args, args.cmd, id=args.id)
    if not status:
        print(f"{args.cmd}: {args.id}: done")
    return status


def _reload(args: argparse.Namespace) -> int:
    status, result = _talk(args, "reload")
    if not status:
        print(f"reloaded: {result['routes']} routes")
        for key in result["restart_needed_for"]:
            print(f"note: {key} changed; it takes effect after a restart")
    return status


def _hash_password(args: argparse.Namespace) -> int:
    import bcrypt

    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("mxbackup: the two passwords differ", file=sys.stderr)
            return 1
        secret = password.encode("utf-8")
    else:  # the bytes as given: AUTH compares the client's bytes, whatever their encoding
        secret = sys.stdin.buffer.readline().rstrip(b"\r\n")
    if not secret:
        print("mxbackup: an empty password", file=sys.stderr)
        return 1
    if len(secret) > 72:
        print("mxbackup: bcrypt uses at most 72 bytes of a password", file=sys.stderr)
        return 1
    print(bcrypt.hashpw(secret, bcrypt.gensalt(rounds=args.rounds)).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
