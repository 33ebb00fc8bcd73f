"""How much the SQLite state store costs the reactor: a hit, a miss, a put, and one batch
flush, on a file with ``N`` live entries.  ``python bench/state_store.py [N]``."""

from __future__ import annotations

import os
import sys
import tempfile
import time

from twisted.internet.task import Clock

from mxbackup.state.sqlite import FLUSH_BATCH, SQLiteStore


def per_call(fn, n: int) -> float:
    started = time.perf_counter()
    for i in range(n):
        fn(i)
    return (time.perf_counter() - started) / n * 1e6


def main(entries: int = 100_000) -> None:
    clock = Clock()
    clock.advance(1e9)
    path = os.path.join(tempfile.mkdtemp(), "state.sqlite")
    store = SQLiteStore(path, clock)
    for i in range(entries):
        store.put("verify", f"example.com|user{i}@example.com", b"+", 1e6)
    store.flush()
    hit = per_call(lambda i: store.get("verify", f"example.com|user{i}@example.com"), 20_000)
    miss = per_call(lambda i: store.get("verify", f"example.com|nobody{i}@example.com"), 20_000)
    put = per_call(lambda i: store.put("verify", f"example.com|new{i}@example.com", b"+", 1e6), 400)
    started = time.perf_counter()
    store.flush()
    flush_400 = (time.perf_counter() - started) * 1e3
    for i in range(FLUSH_BATCH - 1):
        store.put("verify", f"example.com|more{i}@example.com", b"+", 1e6)
    started = time.perf_counter()
    store.flush()
    flush_full = (time.perf_counter() - started) * 1e3
    print(
        f"entries={entries} hit={hit:.1f}us miss={miss:.1f}us put(queue)={put:.1f}us "
        f"flush(400 rows)={flush_400:.2f}ms flush({FLUSH_BATCH - 1} rows)={flush_full:.2f}ms"
    )
    store.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
