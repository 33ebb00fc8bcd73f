"""One delivery connection's results, recorded as they come (``Recorder.record``): in batches
while the connection goes on, the rest once it has ended."""

from __future__ import annotations

import dataclasses
from typing import Any

from twisted.internet import defer

from mxbackup.outbound.recorder import RECORD_RETRY, Recorder, log, logged
from mxbackup.wire.contract import Delivery, Job, JobResult, Outcome

APPLY_EVERY = 50  # finished transactions recorded together while their connection goes on


class Batches:
    """Records one connection's results as they come: those of transactions that end while
    it goes on in batches of APPLY_EVERY (a crash then repeats at most that many deliveries
    known to have worked; recording each at once cost a quarter of the drain's speed: a
    spool round beside every few messages), the rest (``rest``: what the session's end
    decided, ``JobResult.at_end``, and what no batch took) once it has ended, after the
    session has told the target's health."""

    def __init__(self, recorder: Recorder, key: str, jobs: list[Job], delivery: Delivery) -> None:
        self.recorder = recorder
        self.key = key
        self.jobs = jobs
        self.done = delivery.done
        self.results: list[JobResult | None] = [None] * len(jobs)
        self._batch: list[int] = []  # came while the connection goes on, not yet recorded
        self._recorded: set[int] = set()
        for i, d in enumerate(delivery.results):
            d.addCallback(self._came, i)

    def _came(self, result: JobResult, i: int) -> None:
        self.results[i] = result
        if self.done.called or result.at_end:
            return  # the session has ended (or is ending): recorded by ``rest``
        self._batch.append(i)
        if len(self._batch) >= APPLY_EVERY:
            batch, self._batch = self._batch, []
            self._recorded.update(batch)
            with self.recorder.spool.together():  # their removals: one request
                for j in batch:
                    logged(self.recorder.record(self.key, self.results[j]))  # type: ignore[arg-type]

    @defer.inlineCallbacks
    def rest(self, local_error: bool = False, untried: bool = False) -> Any:
        """Record, one after the other, every result not recorded in a batch.  After a local
        error in the client (``local_error``) the results it made up as the session ended say
        nothing about the target: those messages are tried again in a minute instead.
        After a push-back (``untried``) what the session's end decided is not counted."""
        for i, result in enumerate(self.results):
            if i in self._recorded:
                continue
            if result is None:  # the contract says it cannot be: not left stuck in flight
                log.error("no result for id={id} from the delivery", id=self.jobs[i].qid)
            if result is None or (local_error and result.at_end):
                when = self.recorder.clock.seconds() + RECORD_RETRY
                self.recorder.backlog.requeue(self.jobs[i].qid, self.key, when)
                continue
            if untried and result.at_end:  # a push-back (``concurrency``): no retry counted
                result = JobResult(result.job, _not_tried(result.outcomes), at_end=True)
            yield self.recorder.record(self.key, result)


def _not_tried(outcomes: Any) -> dict[str, Outcome]:
    return {r: dataclasses.replace(o, tried=False) for r, o in outcomes.items()}
