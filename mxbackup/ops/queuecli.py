"""The ``mxbackup`` commands that talk to the running server: ``queue ...``, ``status``,
``pause``/``resume``, ``monitor``, ``reload``.  Message commands take a selector, as
``postsuper`` does: queue IDs, ``ALL``, ``-`` (IDs read from stdin, whitespace-separated),
and filters ``--route``, ``--sender``, ``--recipient``, ``--older-than`` (seconds, or 90m,
1h, 2d, 1w); filters narrow the IDs given, or choose among the whole queue.  Exit status: 0
done, 1 refused (or some messages refused), 2 usage, 3 the server cannot be reached."""

from __future__ import annotations

import argparse
import base64
import json
import sys
import time
from datetime import datetime
from typing import Any

from mxbackup.ops.talk import Refused, Unreachable, request, socket_path, stream, talk
from mxbackup.ops.verifycli import route_counts

IDS_PER_REQUEST = 1000  # a request line stays well below the socket's 64 KiB limit
ACTIONS = {  # command: (help, the word for what was done)
    "hold": ("keep messages in the queue without trying them (postsuper -h)", "held"),
    "release": ("undo hold, and try the messages now (postsuper -H)", "released"),
    "delete": ("remove messages, telling nobody (postsuper -d)", "deleted"),
    "bounce": ("give up on messages now: their senders get the DSN", "bounced"),
}


def add_commands(commands: Any) -> None:
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--config", help="the server's configuration (to find its socket)")
    where.add_argument("--socket", help="the control socket, instead of --config")
    select = argparse.ArgumentParser(add_help=False)
    select.add_argument("ids", nargs="*", metavar="ID", help="queue IDs, ALL, or - (stdin)")
    select.add_argument("--route", metavar="DOMAIN", help="messages for this route (target)")
    select.add_argument("--sender", metavar="ADDR", help="messages from ADDR ('<>': bounces)")
    select.add_argument("--recipient", metavar="ADDR", help="messages to ADDR")
    select.add_argument("--older-than", metavar="AGE", type=_age_arg, help="3600, 90m, 1h, 2d")

    queue = commands.add_parser("queue", help="inspect and steer the queue of the running server")
    actions = queue.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[where, select], help="list queued messages")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.add_argument(
        "--limit", type=int, default=LIST_LIMIT, metavar="N",
        help=f"show the N oldest chosen messages (default {LIST_LIMIT}) and how many more",
    )  # fmt: skip
    listing.add_argument("--all", action="store_true", help="every message, page by page")
    listing.set_defaults(run=_queue_list)
    show = actions.add_parser("show", parents=[where], help="envelope and headers of a message")
    show.add_argument("id")
    show.add_argument("--json", action="store_true")
    show.add_argument("--body", action="store_true", help="print the stored message (postcat -q)")
    show.set_defaults(run=_queue_show)
    summary = actions.add_parser("summary", parents=[where], help="messages by age per target")
    summary.add_argument("--json", action="store_true")
    summary.set_defaults(run=_queue_summary)
    flush = actions.add_parser(
        "flush", parents=[where, select], help="try now: the messages chosen (none: all)"
    )
    flush.set_defaults(run=_queue_action, cmd="flush", done="flushed")
    for name, (text, done) in ACTIONS.items():
        action = actions.add_parser(name, parents=[where, select], help=text)
        action.set_defaults(run=_queue_action, cmd=name, done=done)

    for name, text in (
        ("pause", "stop delivery (mail is still accepted and queued); survives a restart"),
        ("resume", "undo pause"),
    ):
        p = commands.add_parser(name, parents=[where], help=text, description=text)
        p.add_argument("route", nargs="?", metavar="ROUTE", help="one route; none: all delivery")
        p.set_defaults(run=_pause, cmd=name)
    status = commands.add_parser("status", parents=[where], help="targets, queue and delivery")
    status.add_argument("--json", action="store_true")
    status.set_defaults(run=_status)
    monitor = commands.add_parser("monitor", parents=[where], help="follow the server's events")
    monitor.add_argument("--json", action="store_true", help="one JSON object a line")
    monitor.set_defaults(run=_monitor)
    reload = commands.add_parser(
        "reload", parents=[where], help="re-read the configuration and address lists"
    )
    reload.set_defaults(run=_reload)


def _age_arg(text: str) -> float:
    from mxbackup.outbound.selection import parse_age  # (Twisted: not for every command)

    try:
        return parse_age(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


# -- selectors ---------------------------------------------------------------------------------
def _selection(args: argparse.Namespace) -> list[dict[str, Any]]:
    """The requests' selector arguments: one request, or one per IDS_PER_REQUEST IDs."""
    ids: list[str] = []
    every = False
    for item in args.ids:
        if item == "-":
            ids.extend(sys.stdin.read().split())
        elif item.upper() == "ALL":
            every = True
        else:
            ids.append(item)
    filters = {
        "route": args.route,
        "sender": args.sender,
        "recipient": args.recipient,
        "older_than": args.older_than,
    }
    filters = {k: v for k, v in filters.items() if v is not None}
    if every:
        if ids:
            raise ValueError("ALL and IDs together: say one or the other")
        return [{"all": True, **filters}]
    if len(ids) == 1 and not filters and args.ids != ["-"]:
        return [{"id": ids[0]}]
    if ids:
        return [
            {"ids": ids[i : i + IDS_PER_REQUEST], **filters}
            for i in range(0, len(ids), IDS_PER_REQUEST)
        ]
    if "-" in args.ids:
        return []  # nothing on stdin: nothing to do
    return [filters]


def _queue_action(args: argparse.Namespace) -> int:
    try:
        requests = _selection(args)
    except ValueError as e:
        print(f"mxbackup: {e}", file=sys.stderr)
        return 2
    if requests == [{}] and args.cmd != "flush":
        print(f"mxbackup: queue {args.cmd}: say which messages: IDs, ALL, --route, --sender, "
              "--recipient, --older-than, or - (IDs on stdin)", file=sys.stderr)  # fmt: skip
        return 2
    done = matched = errors = skipped = 0
    for selector in requests:
        status, result = talk(args, args.cmd, **selector)
        if status:
            return status
        if "id" in selector and not isinstance(result, dict):
            print(f"{args.cmd}: {selector['id']}: done")
            return 0
        done += result.get(args.done, 0)
        matched += result.get("matched", result.get(args.done, 0))
        skipped += result.get("held_skipped", 0)
        errors += result.get("error_count", 0)
        for error in result.get("errors", ()):
            print(f"mxbackup: {error['id']}: {error['error']}", file=sys.stderr)
    print(f"{args.done} {done} message(s)" + (f" of {matched}" if matched != done else ""))
    if skipped:
        print(f"{skipped} held message(s) left alone (release them to try them)")
    return 1 if errors else 0


# -- looking -----------------------------------------------------------------------------------
def _queue_list(args: argparse.Namespace) -> int:
    try:
        requests = _selection(args)
    except ValueError as e:
        print(f"mxbackup: {e}", file=sys.stderr)
        return 2
    messages: list[dict[str, Any]] = []
    unread = "" if args.json else _unread(args)
    for selector in requests:
        status, found = _fetch(args, selector)
        if status:
            return status
        messages.extend(found)
    if args.json:
        print(json.dumps(messages, indent=2))
        return 0
    if not messages and not unread:
        print("Mail queue is empty")
        return 0
    if messages:
        _print_messages(messages, getattr(args, "more", 0))
    if unread:
        print(unread)
    return 0


def _unread(args: argparse.Namespace) -> str:
    """What a listing cannot show while a big queue is read (``queue.background``), asked
    before it (an upper bound); nothing from a server that does not say."""
    try:
        loading = request(socket_path(args), "loading") or {"of": 0, "loaded": 0, "failed": None}
    except (Unreachable, Refused, RuntimeError):
        return ""
    left, failed = loading["of"] - loading["loaded"], loading["failed"]
    more = f"-- and {left} more queued message(s)"
    if failed and not loading.get("retrying"):
        return f"{more} not read: the load stopped ({failed}); they wait on disk"
    return f"{more} of the whole queue still being read: not listed" if left else ""


LIST_LIMIT = 1000
LIST_PAGE = 1000  # messages per request: each page is a short request, the server stays responsive


def _fetch(args: argparse.Namespace, selector: dict[str, Any]) -> tuple[int, list[Any]]:
    """The chosen messages page by page: up to ``--limit`` (with the number left out, shown
    by ``_footer``), or every one with ``--all``."""
    wanted = None if getattr(args, "all", True) else max(0, getattr(args, "limit", LIST_LIMIT))
    found: list[Any] = []
    after = None
    while wanted is None or len(found) < wanted:
        size = LIST_PAGE if wanted is None else min(LIST_PAGE, wanted - len(found))
        kw = dict(selector, limit=size, **({"after": after} if after else {}))
        status, page = talk(args, "list", **kw)
        if status:
            return status, []
        found += page
        if len(page) < size:
            break
        after = page[-1]["id"]
    if wanted is not None and len(found) >= wanted and not selector:
        status, queued = talk(args, "count")
        args.more = 0 if status else max(0, queued - len(found))
    return 0, found


def _print_messages(messages: list[dict[str, Any]], more: int = 0) -> None:
    print(f"{'ID':<20} {'AGE':>8} {'SIZE':>9}  SENDER")
    now = time.time()
    for m in messages:
        held = "  (held)" if m["held"] else ""
        print(f"{m['id']:<20} {age(m['age']):>8} {m['size']:>9}  <{m['sender']}>{held}")
        for r in m["recipients"]:
            when = ""
            if r["state"] == "pending":
                when = f"{r.get('retries_left', '?')} retries left, next: {_next(r, now)}"
            print(f"{'':<20} {r['state']:>8} {r['attempts']:>3} tries  <{r['address']}>  {when}")
            if r["last_reply"]:
                print(f"{'':<33}{r['last_reply'][:300]}")
            reason = r.get("target_reason")
            if reason and reason not in r["last_reply"]:
                print(f"{'':<33}target {r['target']} is down: {reason[:300]}")
    _footer(messages, more)


def _footer(messages: list[dict[str, Any]], more: int = 0) -> None:
    print(f"-- {len(messages)} message(s)")
    if more:
        print(f"-- {more} more message(s) not shown: --limit N or --all to list them")
    for route, count in route_counts(messages).items():
        print(f"-- {route}: {count} message(s) queued")


def _next(r: dict[str, Any], now: float) -> str:
    why = r.get("next_try_why", "")
    if r.get("next_try") is None:
        return why or "-"
    when = "now" if r["next_try"] <= now + 1 else f"in {age(r['next_try'] - now)}"
    return f"{when} ({why})" if why and why != "scheduled" else when


def age(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds}s"
    if seconds < 7200:
        return f"{seconds // 60}m"
    if seconds < 172800:
        return f"{seconds // 3600}h"
    return f"{seconds // 86400}d"


def _queue_show(args: argparse.Namespace) -> int:
    status, info = talk(args, "show", id=args.id, body=args.body)
    if status:
        return status
    if args.body and not args.json:
        sys.stdout.flush()
        sys.stdout.buffer.write(base64.b64decode(info["message"]))
        return 0
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
            f"retries_left={r.get('retries_left')} target={r['target']} "
            f"last_reply={r['last_reply']!r}"
        )
    print()
    print(headers)
    return 0


def _queue_summary(args: argparse.Namespace) -> int:
    status, shape = talk(args, "summary")
    if status:
        return status
    if args.json:
        print(json.dumps(shape, indent=2))
        return 0
    heads = ["T", *map(str, shape["buckets"]), f"{shape['buckets'][-1]}+"]
    width = max([len("TOTAL"), *map(len, shape["targets"])])
    print(f"{'':>{width}} " + " ".join(f"{h:>6}" for h in heads) + "   (age in minutes)")
    rows = [("TOTAL", shape["total"] or [0] * (len(heads) - 1)), *shape["targets"].items()]
    for name, row in rows:
        print(f"{name:>{width}} " + " ".join(f"{n:>6}" for n in [sum(row), *row]))
    return 0


def _loading(loading: dict[str, Any]) -> str:
    """A big queue read while the server accepts mail (``queue.background``)."""
    left = loading["of"] - loading["loaded"]
    line = f"loading: {left} more queued message(s) being read from the spool"
    if loading["failed"] and loading.get("retrying"):
        line += f"; the last read failed: {loading['failed']} (it is tried again)"
    elif loading["failed"]:
        line += f"; STOPPED: {loading['failed']} (they wait for the next start)"
    return line


def _status(args: argparse.Namespace) -> int:
    status, info = talk(args, "status")
    if status:
        return status
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    now = info["now"]
    state = "PAUSED (all targets)" if info["paused"] else "running"
    print(f"delivery: {state}; queue: {info['queue']} message(s)")
    if info.get("loading"):
        print(_loading(info["loading"]))
    for t in info["targets"]:
        hosts = ", ".join(t["hosts"]) or "MX hosts"
        print(f"\n{t['target']} -> {hosts}{'  PAUSED' if t['paused'] else ''}")
        line = t["state"]
        if t["state"] == "down":
            line += f" since {_clock(t['down_since'])} ({age(now - t['down_since'])})"
            if t["next_probe"] is not None:
                line += f", next probe in {age(t['next_probe'] - now)}"
        print(f"  state:  {line}")
        if t["last_error"]:
            print(f"  error:  {t['last_error'][:200]}")
        print(f"  queued: {t['messages']} message(s), {t['recipients']} recipient(s)")
        oldest = t["oldest"]
        if oldest:
            line = f"{oldest['id']}, {age(oldest['age'])} old, {oldest['retries_left']} retries"
            line += f" left, next try {_next(oldest, now)}"
            if oldest["gives_up_at"]:
                when = oldest["gives_up_at"]
                line += f"; returned at {_clock(when)} (in {age(when - now)}) if it keeps failing"
            print(f"  oldest: {line}")
    return 0


def _clock(when: float) -> str:
    return datetime.fromtimestamp(when).strftime("%Y-%m-%d %H:%M:%S")


# -- delivery as a whole -----------------------------------------------------------------------
def _pause(args: argparse.Namespace) -> int:
    status, state = talk(args, args.cmd, route=args.route)
    if not status:
        routes = ", ".join(state["routes"]) or "none"
        print(f"delivery {'PAUSED' if state['global'] else 'running'}; paused routes: {routes}")
    return status


def _monitor(args: argparse.Namespace) -> int:
    try:
        for event in stream(socket_path(args), "monitor"):
            if args.json:
                print(json.dumps(event), flush=True)
            else:
                print(f"{event['time']} {event['level']:<5} {event['text']}", flush=True)
    except KeyboardInterrupt:
        return 0  # Ctrl-C: the way to stop following
    except Unreachable as exc:
        print(f"mxbackup: {exc}", file=sys.stderr)
        return 3
    except (RuntimeError, Refused) as exc:
        print(f"mxbackup: {exc}", file=sys.stderr)
        return 1
    print("mxbackup: the server closed the connection", file=sys.stderr)
    return 0


def _reload(args: argparse.Namespace) -> int:
    status, result = talk(args, "reload")
    if not status:
        print(f"reloaded: {result['routes']} routes")
        for key in result["restart_needed_for"]:
            print(f"note: {key} changed; it takes effect after a restart")
    return status
