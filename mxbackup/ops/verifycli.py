"""``mxbackup verify list [--route DOMAIN] [--json]`` and ``mxbackup verify forget ADDRESS
[--route DOMAIN]``: the recipient-verification cache of the running server (over the control
socket, like ``mxbackup queue``).  Registered by ``ops/cli.py`` with one line."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

Talk = Callable[..., tuple[int, Any]]


def add_verify_parser(commands: Any, where: argparse.ArgumentParser, talk: Talk) -> None:
    verify = commands.add_parser(
        "verify", help="list or forget recipient-verification cache entries"
    )
    actions = verify.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[where], help="list cached verification results")
    listing.add_argument("--route", metavar="DOMAIN", help="only this route's entries")
    listing.add_argument("--json", action="store_true", help="machine-readable output")
    listing.set_defaults(run=lambda args: _list(args, talk))
    forget = actions.add_parser(
        "forget", parents=[where], help="remove an address's entries (it is asked again)"
    )
    forget.add_argument("address")
    forget.add_argument("--route", metavar="DOMAIN", help="only in this route")
    forget.set_defaults(run=lambda args: _forget(args, talk))


def _list(args: argparse.Namespace, talk: Talk) -> int:
    kw = {"route": args.route} if args.route else {}
    status, entries = talk(args, "verify_list", **kw)
    if status:
        return status
    if args.json:
        print(json.dumps(entries, indent=2))
        return 0
    if not entries:
        print("No verification entries")
        return 0
    now = time.time()
    print(f"{'ROUTE':<24} {'RESULT':<8} {'EXPIRES':>8}  ADDRESS")
    for e in entries:
        left = e["expires_at"] - now
        expires = "never" if left > 1e12 else _span(left)
        text = f"  ({e['text']})" if e["text"] else ""
        print(f"{e['route']:<24} {e['result']:<8} {expires:>8}  <{e['address']}>{text}")
    print(f"-- {len(entries)} entr{'y' if len(entries) == 1 else 'ies'}")
    return 0


def _forget(args: argparse.Namespace, talk: Talk) -> int:
    kw = {"route": args.route} if args.route else {}
    status, result = talk(args, "verify_forget", address=args.address, **kw)
    if status:
        return status
    print(f"forgot {result['forgotten']} entr{'y' if result['forgotten'] == 1 else 'ies'}")
    return 0


def _span(seconds: float) -> str:
    seconds = max(0, int(seconds))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= 2 * size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def route_counts(messages: list[dict[str, Any]]) -> dict[str, int]:
    """Messages with a recipient pending for each route (what ``max_queued_messages``
    counts), from ``queue list``'s answer."""
    counts: dict[str, int] = {}
    for m in messages:
        for route in {
            r["route"] for r in m["recipients"] if r["route"] and r["state"] == "pending"
        }:
            counts[route] = counts.get(route, 0) + 1
    return dict(sorted(counts.items()))
