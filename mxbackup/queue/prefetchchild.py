"""The prefetch process's program: it warms the page cache for the batches of message files
the server sends on its stdin and answers one octet per batch on its stdout
(``prefetchproc``: the server's side; ``prefetch.warm``: what is done to each file).

Started as ``python -c "...mxbackup.queue.prefetchchild import main..." PID``: plain Python,
no Twisted.  A request is a 4-byte big-endian length and a pickle of a list of ``(path,
size)``; the answer is ``c`` (some files were cold and announced), ``w`` (all were cached) or
``!`` (the batch failed unexpectedly, or the request could not be read), in the order the
batches end (only their count and last answer matter).  A few threads work at once: opening
a file whose inode is not cached waits for the disk.  The process dies with its parent
(``PR_SET_PDEATHSIG``), ignores SIGINT, SIGHUP and SIGTERM (a terminal's or systemd's
signals to the whole group: the server's stop ends it, not logged as a failure), and
otherwise ends when its stdin closes, after the batches it was sent.
"""

from __future__ import annotations

import os
import pickle
import signal
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

from mxbackup.queue.prefetch import warm
from mxbackup.queue.rounds import FRAME
from mxbackup.queue.spoolchild import die_with_parent

THREADS = 4  # four batches warmed at once (each in order): four opens in flight
COLD, WARM, FAILED = b"c", b"w", b"!"


def requests(stdin: BinaryIO) -> Iterator[list[tuple[str, int]] | None]:
    """Each batch sent, until stdin closes; None for one that cannot be read."""
    while len(head := stdin.read(FRAME.size)) == FRAME.size:
        (size,) = FRAME.unpack(head)
        body = stdin.read(size)
        if len(body) != size:
            return
        try:
            files = pickle.loads(body)
            yield [(str(path), int(length)) for path, length in files]
        except Exception:  # noqa: BLE001 - a request that is no batch: answered "!"
            yield None


def serve(stdin: BinaryIO, stdout: BinaryIO, threads: int = THREADS) -> None:
    """Warm each batch in the background and answer it; returns once stdin has closed and
    every batch sent is done (nobody waits for that: the server does not at its stop)."""
    lock = threading.Lock()

    def answer(octet: bytes) -> None:
        with lock:
            try:
                stdout.write(octet)
                stdout.flush()
            except (OSError, ValueError):
                pass  # the server is gone: nobody reads the answers

    def run(files: list[tuple[str, int]]) -> None:
        try:
            answer(COLD if warm(files) else WARM)
        except Exception:  # noqa: BLE001 - hints only: counted by the server
            answer(FAILED)

    with ThreadPoolExecutor(threads, thread_name_prefix="prefetch") as pool:
        for files in requests(stdin):
            if files is None:
                answer(FAILED)
            else:
                pool.submit(run, files)


def main(argv: list[str]) -> None:
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    die_with_parent(int(argv[1]), "prefetch")
    serve(sys.stdin.buffer, sys.stdout.buffer)
    os._exit(0)  # no flush at exit: its reader may be gone
