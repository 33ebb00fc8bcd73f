"""The state store: shared, non-mail state (the recipient-verification cache, greylisting
triplets), one interface with two backends.

``sqlite:PATH`` (``sqlite.SQLiteStore``) keeps it in one file for one node; ``redis://HOST:PORT/DB``
(``redisstore.RedisStore``) lets several nodes share what they learned.  Every value is bytes
under a (namespace, key) with a time to live in seconds; expiry is read on the injected
clock (``IReactorTime.seconds()``) for SQLite and on the server's clock for Redis.

Namespaces in use: ``verify`` (recipient verification), ``grey`` (greylisting).

A store that cannot answer (file unreadable, Redis down) errbacks with ``StoreUnavailable``,
fast; it never raises into the caller and never crashes the server: the callers decide what an
unanswered question means (never a permanent refusal, see design invariant 6).
"""

from __future__ import annotations

from mxbackup.config.stores import parse_store
from mxbackup.state.base import StateStore, StoreUnavailable


def open_store(url: str, reactor) -> StateStore:
    """The store ``url`` names (``sqlite:PATH`` or ``redis://...``).  Never raises for a store
    that cannot be reached: that store answers ``StoreUnavailable`` until it can."""
    parsed = parse_store(url)
    if isinstance(parsed, str):
        raise ValueError(f"state store {url!r}: {parsed}")
    if parsed.kind == "sqlite":
        from mxbackup.state.sqlite import SQLiteStore

        return SQLiteStore(parsed.path, reactor)
    from mxbackup.state.redisstore import RedisStore

    return RedisStore(parsed, reactor)


__all__ = ["StateStore", "StoreUnavailable", "open_store"]
