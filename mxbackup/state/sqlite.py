"""The embedded state store: one SQLite file (WAL), for one node.

Reads run on the reactor thread: a hit on a warm page cache is one B-tree lookup by primary key,
measured at a few microseconds (``bench/state_store.py``; well under the 1 ms budget), so a
thread hop would cost more than it saves.  Writes are queued in memory (``_pending``, which
reads consult first, so a write is visible at once) and committed in one transaction every
``FLUSH_INTERVAL`` seconds or ``FLUSH_BATCH`` writes: one commit per batch instead of per
write.  With ``synchronous=NORMAL`` in WAL mode a commit does not fsync; measured at well
under a millisecond for a batch of a few hundred rows.  What a crash loses: the writes of the
last ``FLUSH_INTERVAL`` (a cache: the next callout relearns them).

Bounded size: a ``LoopingCall`` on the injected clock removes expired rows every
``PURGE_INTERVAL`` seconds, ``PURGE_CHUNK`` rows at a time.

A file that cannot be opened or written errbacks ``StoreUnavailable``; opening is retried at
most every ``REOPEN_INTERVAL`` seconds, so the store comes back by itself when the file does.
"""

from __future__ import annotations

import os
import sqlite3

from twisted.internet import defer, task
from twisted.logger import Logger

from mxbackup.state.base import StoreUnavailable

log = Logger(namespace="mxbackup.state")

FLUSH_INTERVAL = 0.1
FLUSH_BATCH = 500
PURGE_INTERVAL = 60.0
PURGE_CHUNK = 2000
REOPEN_INTERVAL = 5.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS entries (
    ns TEXT NOT NULL, key TEXT NOT NULL, value BLOB NOT NULL, expires REAL NOT NULL,
    PRIMARY KEY (ns, key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS entries_expires ON entries (expires);
"""

_Pending = tuple[bytes, float] | None  # None: a delete


class SQLiteStore:
    def __init__(self, path: str, reactor) -> None:
        self.path = path
        self.clock = reactor
        self._db: sqlite3.Connection | None = None
        self._opened_at: float | None = None  # when the last failed open was tried
        self._pending: dict[tuple[str, str], _Pending] = {}
        self._flush_call = None
        self.errors = 0
        self._purge = task.LoopingCall(self.purge)
        self._purge.clock = reactor
        self._purge.start(PURGE_INTERVAL, now=False)
        try:
            self._connection()
        except StoreUnavailable as e:
            log.warn("{error}; retried at most every {n} seconds", error=e, n=REOPEN_INTERVAL)

    # -- the connection ------------------------------------------------------------------
    def _connection(self) -> sqlite3.Connection:
        if self._db is not None:
            return self._db
        now = self.clock.seconds()
        if self._opened_at is not None and now - self._opened_at < REOPEN_INTERVAL:
            raise StoreUnavailable(f"state store {self.path} cannot be opened")
        self._opened_at = now
        try:
            directory = os.path.dirname(self.path)
            if directory:
                os.makedirs(directory, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except (sqlite3.Error, OSError) as e:
            self.errors += 1
            raise StoreUnavailable(f"state store {self.path}: {e}") from e
        self._db, self._opened_at = db, None
        return db

    def _lost(self, error: Exception) -> StoreUnavailable:
        """``error`` from SQLite: drop the connection (reopened later) and say why."""
        self.errors += 1
        if self._db is not None:
            try:
                self._db.close()
            except sqlite3.Error:
                pass
        self._db, self._opened_at = None, self.clock.seconds()
        return StoreUnavailable(f"state store {self.path}: {error}")

    def _query(self, sql: str, args: tuple) -> list[tuple]:
        db = self._connection()
        try:
            return db.execute(sql, args).fetchall()
        except sqlite3.Error as e:
            raise self._lost(e) from e

    # -- the interface ---------------------------------------------------------------------
    def get(self, namespace: str, key: str) -> defer.Deferred:
        try:
            return defer.succeed(self._get_now(namespace, key))
        except StoreUnavailable as e:
            return defer.fail(e)

    def _get_now(self, namespace: str, key: str) -> bytes | None:
        now = self.clock.seconds()
        if (namespace, key) in self._pending:
            entry = self._pending[namespace, key]
            return entry[0] if entry is not None and entry[1] > now else None
        rows = self._query(
            "SELECT value FROM entries WHERE ns = ? AND key = ? AND expires > ?",
            (namespace, key, now),
        )
        return bytes(rows[0][0]) if rows else None

    def put(self, namespace: str, key: str, value: bytes, ttl: float) -> defer.Deferred:
        if ttl <= 0:
            self._queue(namespace, key, None)
        else:
            self._queue(namespace, key, (bytes(value), self.clock.seconds() + ttl))
        return defer.succeed(None)

    def delete(self, namespace: str, key: str) -> defer.Deferred:
        try:
            existed = self._get_now(namespace, key) is not None
        except StoreUnavailable as e:
            return defer.fail(e)
        self._queue(namespace, key, None)
        return defer.succeed(existed)

    def scan(self, namespace: str, prefix: str = "") -> defer.Deferred:
        now = self.clock.seconds()
        try:
            rows = self._query(
                "SELECT key, value, expires FROM entries WHERE ns = ? AND key >= ? "
                "AND expires > ? ORDER BY key",
                (namespace, prefix, now),
            )
        except StoreUnavailable as e:
            return defer.fail(e)
        found = {k: (bytes(v), e) for k, v, e in rows if k.startswith(prefix)}
        for (ns, key), entry in self._pending.items():
            if ns != namespace or not key.startswith(prefix):
                continue
            if entry is None or entry[1] <= now:
                found.pop(key, None)
            else:
                found[key] = entry
        return defer.succeed([(k, v, e) for k, (v, e) in sorted(found.items())])

    def close(self) -> defer.Deferred:
        if self._purge.running:
            self._purge.stop()
        try:
            self.flush()
        except StoreUnavailable:
            pass
        if self._db is not None:
            self._db.close()
            self._db = None
        return defer.succeed(None)

    # -- batching and purging ----------------------------------------------------------------
    def _queue(self, namespace: str, key: str, entry: _Pending) -> None:
        self._pending[namespace, key] = entry
        if len(self._pending) >= FLUSH_BATCH:
            self._flush_logged()
        elif self._flush_call is None:
            self._flush_call = self.clock.callLater(FLUSH_INTERVAL, self._flush_logged)

    def _flush_logged(self) -> None:
        n = len(self._pending)
        try:
            self.flush()
        except StoreUnavailable as e:
            log.warn("state store: {n} writes lost: {error}", n=n, error=e)

    def flush(self) -> None:
        """Commit what is pending, in one transaction.  On failure the batch is dropped (it is
        a cache; keeping it would grow without bound while the file is gone)."""
        if self._flush_call is not None and self._flush_call.active():
            self._flush_call.cancel()
        self._flush_call = None
        if not self._pending:
            return
        batch, self._pending = self._pending, {}
        puts = [(ns, k, e[0], e[1]) for (ns, k), e in batch.items() if e is not None]
        dels = [(ns, k) for (ns, k), e in batch.items() if e is None]
        try:
            db = self._connection()
            with db:
                db.execute("BEGIN")
                db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?)", puts)
                db.executemany("DELETE FROM entries WHERE ns = ? AND key = ?", dels)
        except sqlite3.Error as e:
            raise self._lost(e) from e

    def purge(self) -> int:
        """Remove expired rows (at most ten chunks a call); how many went."""
        removed = 0
        try:
            db = self._connection()
            for _ in range(10):
                with db:
                    db.execute("BEGIN")
                    n = db.execute(
                        "DELETE FROM entries WHERE (ns, key) IN (SELECT ns, key FROM entries "
                        "WHERE expires <= ? LIMIT ?)",
                        (self.clock.seconds(), PURGE_CHUNK),
                    ).rowcount
                removed += n
                if n < PURGE_CHUNK:
                    break
        except sqlite3.Error as e:
            log.warn("state store: purge failed: {error}", error=self._lost(e))
        except StoreUnavailable:
            pass
        return removed
