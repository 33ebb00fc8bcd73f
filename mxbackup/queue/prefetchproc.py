"""The prefetch process, seen from the server: a connection's message files are handed to a
child process that warms the page cache for them (``prefetch``; its program:
``prefetchchild``) while the connection is made.

Why a process and not threads: four threads doing it inside the server (the first version)
held a fifth of a core each during a drain of a big queue, and every return from their
system calls took the interpreter lock from the reactor thread, which does the deliveries:
on a drain of 620,000 half-cold files, 1,755 msg/s with them, 1,955 without any warming.

Only hints, never the reactor's concern: a batch is sent as one frame and forgotten (at most
``AHEAD_BATCHES`` unanswered: when the child is behind, a batch is not sent and its files are
read as before), nothing waits for an answer, the child is started with the reactor
(``start``; else at the first use), and if it dies it is started again at a later use
(after ``RESTART_AFTER`` seconds), counted in ``failures``
(``mxbackup_prefetch_failures_total``) and logged.  It ends when its stdin closes (``stop``)
or with the server (the parent-death signal).
"""

from __future__ import annotations

import os
import pickle
import sys
from collections.abc import Iterable
from typing import Any

from twisted.internet import protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from mxbackup.queue import prefetch
from mxbackup.queue.prefetchchild import FAILED, WARM
from mxbackup.queue.rounds import FRAME

log = Logger(namespace="mxbackup.prefetch")

AHEAD_BATCHES = 8  # batches sent and not yet answered, at most (~800 files ahead)
RESTART_AFTER = 30.0  # seconds after the child's unexpected end before it is started again

_CHILD = "import sys; from mxbackup.queue.prefetchchild import main; main(sys.argv)"
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Prefetcher(protocol.ProcessProtocol):
    """``prefetch(files)``: warm ``(path, size)`` in order, in the prefetch process."""

    def __init__(self, reactor: Any, ahead: int = AHEAD_BATCHES) -> None:
        self._reactor = reactor
        self._ahead = ahead
        self._transport: Any = None
        self._stopped = False
        self._restart_at = 0.0  # (the reactor's seconds) after an unexpected end
        self.started = False  # whether the child was ever started
        self.unanswered = 0  # batches sent, not answered yet
        self.cold = True  # the last batch answered had files to announce
        self.failures = 0  # batches that failed, and ends of the child (metrics, manhole)
        self._skipped = 0

    def __call__(self, files: Iterable[tuple[str, int]]) -> None:
        if prefetch._WILLNEED is None or self._stopped:
            return
        if not self.cold and self._skipped < prefetch.SAMPLE - 1:
            self._skipped += 1  # the queue is cached: only one batch in SAMPLE is looked at
            return
        if self.unanswered >= self._ahead or not self._running():
            return  # the child is behind (or cannot run): the send reads the files itself
        self._skipped = 0
        payload = pickle.dumps(list(files), protocol=pickle.HIGHEST_PROTOCOL)
        self._transport.writeSequence([FRAME.pack(len(payload)), payload])
        self.unanswered += 1

    def start(self) -> None:
        """Start the child now (the service does, as the reactor starts, as it does the spool
        process's): its Python start-up does not compete with the first deliveries."""
        if prefetch._WILLNEED is not None and not self._stopped:
            self._running()

    def _running(self) -> bool:
        if self._transport is not None:
            return True
        if self._reactor.seconds() < self._restart_at:
            return False
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (env.get("PYTHONPATH", ""), _PACKAGE_PARENT) if p
        )
        try:
            self._transport = self._reactor.spawnProcess(
                self,
                sys.executable,
                [sys.executable, "-c", _CHILD, str(os.getpid())],
                env=env,
                childFDs={0: "w", 1: "r", 2: 2},
            )
        except OSError as e:
            self._gave_up(f"cannot start the prefetch process: {e}")
            return False
        self.started = True
        return True

    def _gave_up(self, why: str) -> None:
        self.failures += 1
        self._restart_at = self._reactor.seconds() + RESTART_AFTER
        log.error("{why}; started again at a delivery in {after:.0f} s or later (page-cache "
                  "warming only: the messages are read as before)", why=why,
                  after=RESTART_AFTER)  # fmt: skip

    # -- ProcessProtocol -------------------------------------------------------------------
    def childDataReceived(self, childFD: int, data: bytes) -> None:
        for octet in data:
            self.unanswered = max(0, self.unanswered - 1)
            self.failures += octet == FAILED[0]
            self.cold = octet != WARM[0]

    def processEnded(self, reason: Failure) -> None:
        self._transport = None
        self.unanswered = 0
        if not self._stopped:
            self._gave_up(f"the prefetch process ended: {reason.getErrorMessage()}")

    def stop(self) -> None:
        """No more warming; the child ends after the batches it was sent (not waited for)."""
        self._stopped = True
        if self._transport is not None:
            self._transport.closeStdin()
