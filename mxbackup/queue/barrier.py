"""The durability barrier: a state change the queue is writing, which others wait for.

Before a delivery starts its first transaction, the messages' new state (the try counted) must
be on disk; connecting and EHLO go on meanwhile.  A ``Barrier`` stands for those writes: any
number of callers ``wait()``, each getting its own Deferred that fires once the writes did, or
fails with their error.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.python.failure import Failure


class Barrier:
    def __init__(self, writes: defer.Deferred) -> None:
        """``writes`` fires when the state is durable, or fails with why it is not."""
        self._settled = False
        self._failure: Failure | None = None
        self._waiters: list[defer.Deferred[None]] = []
        writes.addCallbacks(self._open, self._fail)

    @property
    def settled(self) -> bool:
        return self._settled

    def wait(self) -> defer.Deferred[None]:
        """Fires with None once the writes are durable, or fails with their error."""
        if not self._settled:
            d: defer.Deferred[None] = defer.Deferred()
            self._waiters.append(d)
            return d
        if self._failure is not None:
            return defer.fail(self._failure)
        return defer.succeed(None)

    def _open(self, _: object) -> None:
        self._settle(None)

    def _fail(self, failure: Failure) -> None:
        self._settle(failure)  # consumed: only the waiters, if any, hear of it

    def _settle(self, failure: Failure | None) -> None:
        self._settled, self._failure = True, failure
        waiters, self._waiters = self._waiters, []
        for d in waiters:
            if failure is None:
                d.callback(None)
            else:
                d.errback(failure)
