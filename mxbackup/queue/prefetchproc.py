"""The prefetch process, seen from the server: a connection's message files are handed to a
child process that warms the page cache for them (``prefetch``; its program:
``prefetchchild``) while the connection is made.

Why a process and not threads: four threads doing it inside the server (the first version)
held a fifth of a core each during a drain of a big queue, and every return from their
system calls took the interpreter lock from the reactor thread, which does the deliveries:
on a drain of 620,000 half-cold files, 1,755 msg/s with them, 1,955 without any warming.

Only hints, never the reactor's concern: a batch is sent as one frame and forgotten (at most
``AHEAD_BATCHES`` unanswered: when the child is behind, a batch is not sent and its files are
read as before; behind with its oldest batch unanswered for ``STUCK_AFTER`` seconds, it is
killed), nothing waits for an answer, the child is started with the reactor
(``start``; else at the first use), and if it dies it is started again at a later use
(after ``RESTART_AFTER`` seconds), counted in ``failures``
(``mxbackup_prefetch_failures_total``) and logged.  It ends when its stdin closes (``stop``)
or with the server (the parent-death signal).
"""

from __future__ import annotations

import pickle
from collections import deque
from collections.abc import Iterable
from typing import Any

from twisted.internet import protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from mxbackup.queue import prefetch
from mxbackup.queue.prefetchchild import FAILED, WARM
from mxbackup.queue.rounds import FRAME
from mxbackup.queue.spoolproc import spawn_child

log = Logger(namespace="mxbackup.prefetch")

AHEAD_BATCHES = 8  # batches sent and not yet answered, at most (~800 files ahead)
RESTART_AFTER = 30.0  # seconds after the child's unexpected end before it is started again
STUCK_AFTER = 60.0  # seconds the oldest unanswered batch may take while the child is behind

_CHILD = "import sys; from mxbackup.queue.prefetchchild import main; main(sys.argv)"


class Prefetcher(protocol.ProcessProtocol):
    """``prefetch(files)``: warm ``(path, size)`` in order, in the prefetch process."""

    def __init__(self, reactor: Any, ahead: int = AHEAD_BATCHES) -> None:
        self._reactor = reactor
        self._ahead = ahead
        self._transport: Any = None
        self._stopped = False
        self._restart_at = 0.0  # (the reactor's seconds) after an unexpected end
        self._sent: deque[float] = deque()  # when each unanswered batch was sent
        self.started = False  # whether the child was ever started
        self.cold = True  # the last batch answered had files to announce
        self.failures = 0  # batches that failed, and ends of the child (metrics, manhole)
        self._skipped = 0

    @property
    def unanswered(self) -> int:
        """Batches sent, not answered yet."""
        return len(self._sent)

    def __call__(self, files: Iterable[tuple[str, int]]) -> None:
        if not prefetch.supported() or self._stopped:
            return
        if not self.cold and self._skipped < prefetch.SAMPLE - 1:
            self._skipped += 1  # the queue is cached: only one batch in SAMPLE is looked at
            return
        if self._behind() or not self._running():
            return  # the child is behind (or cannot run): the send reads the files itself
        self._skipped = 0
        try:
            payload = pickle.dumps(list(files), protocol=pickle.HIGHEST_PROTOCOL)
            self._transport.writeSequence([FRAME.pack(len(payload)), payload])
        except Exception as e:  # noqa: BLE001 - hints only: never a delivery's failure
            self._gave_up(f"cannot hand files to the prefetch process: {e}")
            return
        self._sent.append(self._reactor.seconds())

    def start(self) -> None:
        """Start the child now (the service does, as the reactor starts, as it does the spool
        process's): its Python start-up does not compete with the first deliveries."""
        if prefetch.supported() and not self._stopped:
            self._running()

    def _behind(self) -> bool:
        """``ahead`` batches unanswered; the oldest for ``STUCK_AFTER`` seconds (a hung disk,
        a child that cannot answer): it is killed, counted, and started again later."""
        if len(self._sent) < self._ahead:
            return False
        if self._reactor.seconds() - self._sent[0] > STUCK_AFTER and self._transport is not None:
            self._gave_up(f"the prefetch process has not answered for {STUCK_AFTER:.0f} s")
            try:
                self._transport.signalProcess("KILL")
            except Exception:  # noqa: BLE001 - gone already: processEnded comes
                pass
        return True

    def _running(self) -> bool:
        if self._transport is not None:
            return True
        if self._reactor.seconds() < self._restart_at:
            return False
        try:
            self._transport = spawn_child(self._reactor, self, _CHILD)
        except Exception as e:  # noqa: BLE001 - hints only: never a delivery's failure
            self._gave_up(f"cannot start the prefetch process: {e}")
            return False
        self.started = True
        log.info("prefetch process started (pid {pid})", pid=self._transport.pid)
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
            if self._sent:
                self._sent.popleft()
            if octet == FAILED[0]:
                self.failures += 1
            self.cold = octet != WARM[0]

    def processEnded(self, reason: Failure) -> None:
        self._transport = None
        self._sent.clear()
        if not self._stopped and self._reactor.seconds() >= self._restart_at:
            self._gave_up(f"the prefetch process ended: {reason.getErrorMessage()}")

    def stop(self) -> None:
        """No more warming; the child ends after the batches it was sent (not waited for)."""
        self._stopped = True
        if self._transport is not None:
            self._transport.closeStdin()
