"""Queue administration: what the control socket (``mxbackup queue ...``) and the manhole do
to one message.

Each command refuses a message that is not queued (KeyError) or is being delivered right now
(ValueError: its outcome is on its way, try again shortly).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from mxbackup.outbound.health import target_key
from mxbackup.outbound.scheduler import Scheduler
from mxbackup.queue.envelope import Envelope
from mxbackup.wire.contract import Outcome

log = Logger(namespace="mxbackup.scheduler")  # its lines were the scheduler's: kept as they are


class QueueAdmin:
    def __init__(self, scheduler: Scheduler) -> None:
        self.backlog = scheduler.backlog
        self.recorder = scheduler.recorder
        self.spool = scheduler.spool
        self.clock = scheduler.clock
        self.stats = scheduler.stats

    def flush_message(self, qid: str) -> bool:
        """Due now (postqueue -i): at each of its targets where it is not in flight.  A held
        message is refused (release it to try it)."""
        self._get(qid, keep=False)  # read only: a bulk flush keeps nothing unpacked
        if self.backlog.is_held(qid):
            raise ValueError(f"message {qid} is held; 'mxbackup queue release {qid}' tries it")
        self.backlog.flush_message(qid, self.clock.seconds())
        return True

    def hold(self, qid: str) -> defer.Deferred:
        """Not tried until released (postsuper -h)."""
        return self._set_held(qid, True)

    def release(self, qid: str) -> defer.Deferred:
        """Tried again, at once (postsuper -H)."""
        return self._set_held(qid, False)

    @defer.inlineCallbacks
    def _set_held(self, qid: str, held: bool) -> Any:
        envelope = self._get(qid)
        self.backlog.set_held(envelope, held)
        yield self.recorder.update(envelope)  # failing, the file may not say it: doubted
        if not held:
            self.flush_message(qid)
        return True

    @defer.inlineCallbacks
    def delete(self, qid: str) -> Any:
        """Remove the message without telling anyone (postsuper -d)."""
        envelope = self._get(qid)
        self.backlog.forget(envelope)
        yield self.spool.remove(qid)
        log.info("deleted id={id} by the administrator", id=qid)
        return True

    @defer.inlineCallbacks
    def bounce_now(self, qid: str) -> Any:
        """Give up on every pending recipient now: the sender gets the DSN."""
        envelope = self._get(qid)
        now = self.clock.seconds()
        failed = []
        for rcpt in envelope.pending():
            text = "5.0.0 returned to sender by the administrator"
            if rcpt.last_reply:
                text = f"5.0.0 given up by the administrator; last reply: {rcpt.last_reply}"
            rcpt.state = "failed"
            failed.append((rcpt, Outcome("permfail", 0, text)))
            self.stats.bounced += 1
        key = target_key(failed[0][0]) if failed else ""
        yield self.recorder.settle(envelope, key, failed, now)
        log.info("bounced id={id} by the administrator", id=qid)
        return True

    def _get(self, qid: str, keep: bool = True) -> Envelope:
        """The message's envelope, to change (``keep``: the one object), or to read."""
        envelopes = self.backlog.envelopes
        envelope = envelopes.get(qid) if keep else envelopes.peek(qid)
        if envelope is None:
            raise KeyError(f"no message {qid} in the queue")
        if self.backlog.inflight.busy(qid):
            raise ValueError(f"message {qid} is being delivered right now; try again shortly")
        return envelope
