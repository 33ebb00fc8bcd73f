"""Control-socket commands for the recipient-verification cache: ``verify_list`` (optionally of
one route) and ``verify_forget`` (an address, in every route or one).  Registered by
``service.py`` into ``Commands.extra``; the CLI side is ``ops/verifycli.py``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from mxbackup.state.verifycache import VerifyCache


def verify_commands(cache: VerifyCache) -> dict[str, Callable[..., Any]]:
    @defer.inlineCallbacks
    def verify_list(route: str | None = None):
        entries = yield cache.entries(route.lower().rstrip(".") if route else None)
        return [
            {
                "route": r,
                "address": address,
                "result": "positive" if entry.positive else "negative",
                "text": entry.text,
                "expires_at": entry.expires_at,
            }
            for r, address, entry in entries
        ]

    @defer.inlineCallbacks
    def verify_forget(address: str, route: str | None = None):
        removed = yield cache.forget(address, route.lower().rstrip(".") if route else None)
        if not removed:
            raise KeyError(f"no verification entry for {address}")
        return {"forgotten": removed}

    return {"verify_list": verify_list, "verify_forget": verify_forget}
