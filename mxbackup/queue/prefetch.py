"""Warming the page cache for the messages a delivery connection is about to send.

After a long outage the queue's message files are often no longer in the page cache (written
hours ago and pushed out since, or the machine restarted).  The SMTP client reads each one on
the reactor thread as it sends it (``wire.body``), and a read that goes to the disk stops the
whole server for its duration: ~170 µs for a 5 KB file on the bench VM, where the reactor
waited ~13 % of a drain of a queue of 750,000 whose files were cold.

So when a connection takes its messages, a few threads open each file (its inode and
directory entry come into the caches) and tell the kernel its data will be needed
(``POSIX_FADV_WILLNEED``: the read is started, not waited for), in the order they will be
sent, skipping those already cached and stopping after a run of them (``QUICK``).  Only
hints: nothing is read into Python but one octet, the files are never written, and any error
is ignored (the send reads the file as before and reports what it finds).  Where
``posix_fadvise`` does not exist, nothing is done.  Pure: no reactor.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor

THREADS = 4  # the reads of four connections' batches in flight at once
AHEAD = 1 << 20  # octets of a file announced at most (a large message streams anyway)
# When the page cache holds the queue (the usual case), warming is wasted work that competes
# with the reactor: a batch stops after QUICK files in a row whose first page is in the cache
# (a one-octet read that may not wait: ``RWF_NOWAIT``), as the rest of it, written about when
# they were, is most likely cached too.
QUICK = 8
# And while the batches find everything cached, only one in SAMPLE is looked at at all (the
# threads' work and their turns at the interpreter lock cost the reactor ~5 % of a drain).
SAMPLE = 10

_WILLNEED = getattr(os, "POSIX_FADV_WILLNEED", None)
_NOWAIT = getattr(os, "RWF_NOWAIT", None)


class Prefetcher:
    """``prefetch(files)``: warm ``(path, size)`` in order, in the background."""

    def __init__(self, threads: int = THREADS) -> None:
        self._threads = threads
        self._pool: ThreadPoolExecutor | None = None  # started at the first use, after the
        # start-up (whose readers fork only while the server has no other thread)
        self._stopped = False
        self.cold = True  # the last batch looked at had files to announce (set by a thread)
        self.failures = 0  # batches ended by an unexpected error (metrics, the manhole)
        self._skipped = 0

    def __call__(self, files: Iterable[tuple[str, int]]) -> None:
        if _WILLNEED is None or self._stopped:
            return
        if not self.cold and self._skipped < SAMPLE - 1:
            self._skipped += 1
            return
        self._skipped = 0
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="prefetch")
        try:
            self._pool.submit(self._warm, list(files))
        except RuntimeError:  # shut down meanwhile
            pass

    def _warm(self, files: list[tuple[str, int]]) -> None:
        try:  # (a bool set whole: read by the reactor thread)
            self.cold = warm(files, lambda: self._stopped) > 0
        except Exception:  # noqa: BLE001 - only hints: never the reactor's concern
            self.failures += 1
            self.cold = True

    @property
    def started(self) -> bool:
        """Whether its threads were started (at the first use)."""
        return self._pool is not None

    def stop(self) -> None:
        """No more warming; what was asked and has not started is dropped."""
        self._stopped = True
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def warm(files: list[tuple[str, int]], stopped: Callable[[], bool] = lambda: False) -> int:
    """Announce each file's first ``AHEAD`` octets unless it is in the cache already, until
    ``QUICK`` in a row were or ``stopped()`` (the server is stopping: a batch of cold files
    must not hold its exit, which waits for these threads); how many were announced."""
    advice = _WILLNEED
    if advice is None:
        return 0
    done = quick = 0
    probe = bytearray(1)
    for path, size in files:
        if stopped():
            break
        try:
            fd = os.open(path, os.O_RDONLY)
        except OSError:
            continue
        try:
            if cached(fd, probe):
                quick += 1
                if quick >= QUICK:
                    break
                continue
            quick = 0
            os.posix_fadvise(fd, 0, 0 if size <= AHEAD else AHEAD, advice)
            done += 1
        except OSError:
            pass
        finally:
            os.close(fd)
    return done


def cached(fd: int, probe: bytearray) -> bool:
    """Whether the file's first page is in the page cache (False where that cannot be told
    without waiting: then it is announced)."""
    if _NOWAIT is None:
        return False
    try:
        return os.preadv(fd, [probe], 0, _NOWAIT) > 0
    except OSError:  # BlockingIOError: not cached; EOPNOTSUPP, EINVAL: cannot tell
        return False
