"""What is in flight: every (message, target) from the moment the tick takes it until its
outcome is recorded.

Pure: no reactor, no I/O.  The one owner of in-flight state: the entries, the messages
waiting per target for a connection, whether a flush passed over an entry meanwhile, and the
recipients' ``inflight`` flag (noted in the spool's try log before a try, ``queue.tries``, so a
restart counts and retries at once what a crash interrupted).  Every path that takes, sends,
gives up or records goes through here; nothing else marks or unmarks.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Iterable

from mxbackup.outbound.health import target_key
from mxbackup.queue.envelope import Envelope, Recipient

Entry = tuple[str, str]  # (queue id, target key)


class InFlight:
    def __init__(self) -> None:
        self._flushed: dict[Entry, bool] = {}  # entry -> a flush passed over it meanwhile
        self._waiting: dict[str, deque[str]] = {}  # target -> queue ids waiting to be sent
        self._messages: Counter[str] = Counter()  # queue id -> its entries in flight

    def __contains__(self, entry: object) -> bool:
        return entry in self._flushed

    def __len__(self) -> int:
        return len(self._flushed)

    def busy(self, qid: str) -> bool:
        """The message is in flight to some target."""
        return qid in self._messages

    def busy_ids(self) -> list[str]:
        """The messages in flight to some target."""
        return list(self._messages)

    # -- taking and sending ------------------------------------------------------------------
    def wait(self, qid: str, key: str) -> None:
        """Taken for ``key``: it waits for a connection there."""
        entry = (qid, key)
        if entry in self._flushed:
            return
        self._flushed[entry] = False
        self._messages[qid] += 1
        self._waiting.setdefault(key, deque()).append(qid)

    def waiting(self, key: str) -> int:
        return len(self._waiting.get(key, ()))

    def next_batch(self, key: str, size: int) -> list[str]:
        """Up to ``size`` messages waiting for ``key``, oldest first, for one connection."""
        queue = self._waiting.get(key)
        batch: list[str] = []
        while queue and len(batch) < size:
            batch.append(queue.popleft())
        if queue is not None and not queue:
            del self._waiting[key]
        return batch

    def drain(self, key: str) -> list[str]:
        """Every message waiting for ``key`` (the target went down: none will be sent)."""
        return list(self._waiting.pop(key, ()))

    @staticmethod
    def sending(rcpts: Iterable[Recipient]) -> None:
        """The try is about to start: marked in the envelope (noted in the try log)."""
        for rcpt in rcpts:
            rcpt.inflight = True

    # -- the end -----------------------------------------------------------------------------
    def flush(self, qid: str, key: str) -> bool:
        """A flush passed over the entry: due at once when it is recorded (else a flush
        racing with the end of a connection strands it until its next attempt).  False
        if it is not in flight."""
        entry = (qid, key)
        if entry not in self._flushed:
            return False
        self._flushed[entry] = True
        return True

    def release(self, qid: str, key: str, envelope: Envelope | None) -> bool:
        """Its outcome is decided (or it was never sent): no longer in flight, nor are its
        recipients at ``key`` (those of ``envelope``; None leaves their marks alone).  True if
        a flush passed over it meanwhile.  Called once it has left the waiting line
        (``next_batch``, ``drain``) or if it never joined it."""
        if envelope is not None:
            for rcpt in envelope.recipients:
                if rcpt.inflight and target_key(rcpt) == key:
                    rcpt.inflight = False
        flushed = self._flushed.pop((qid, key), None)
        if flushed is None:
            return False
        self._messages[qid] -= 1
        if not self._messages[qid]:
            del self._messages[qid]
        return flushed
