"""Warming the page cache for the messages a delivery connection is about to send.

After a long outage the queue's message files are often no longer in the page cache (written
hours ago and pushed out since, or the machine restarted).  The SMTP client reads each one on
the reactor thread as it sends it (``wire.body``), and a read that goes to the disk stops the
whole server for its duration: ~170 µs for a 5 KB file on the bench VM, where the reactor
waited ~13 % of a drain of a queue of 750,000 whose files were cold.

So when a connection takes its messages, the prefetch process (``prefetchproc``: a process
of its own, so its work never waits for the reactor's interpreter lock nor takes it) opens
each file (its inode and directory entry come into the caches) and tells the kernel its
data will be needed (``POSIX_FADV_WILLNEED``: the read is started, not waited for), in the
order they will be sent, skipping those already cached and stopping after a run of them
(``QUICK``).  Only hints: nothing is read into Python but one octet, the files are never
written, and any error is ignored (the send reads the file as before and reports what it
finds).  Where ``posix_fadvise`` does not exist, nothing is done.  This module is what is
done to the files (the process's program: ``prefetchchild``).  Pure: no reactor.
"""

from __future__ import annotations

import os

AHEAD = 1 << 20  # octets of a file announced at most (a large message streams anyway)
# When the page cache holds the queue (the usual case), warming is wasted work: a batch
# stops after QUICK files in a row whose first page is in the cache (a one-octet read that
# may not wait: ``RWF_NOWAIT``), as the rest of it, written about when they were, is most
# likely cached too.
QUICK = 8
# And while the batches find everything cached, only one in SAMPLE is sent at all (each
# costs the reactor a pickle and a write).
SAMPLE = 10

_WILLNEED = getattr(os, "POSIX_FADV_WILLNEED", None)
_NOWAIT = getattr(os, "RWF_NOWAIT", None)


def supported() -> bool:
    """Whether this system can be told a file will be read (``posix_fadvise``)."""
    return _WILLNEED is not None


def warm(files: list[tuple[str, int]]) -> int:
    """Announce each file's first ``AHEAD`` octets unless it is in the cache already, until
    ``QUICK`` in a row were; how many were announced."""
    advice = _WILLNEED
    if advice is None:
        return 0
    done = quick = 0
    probe = bytearray(1)
    for path, size in files:
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
