"""A big queue loaded while the server already accepts mail (``recoverysteps``).

``Recovery.begin`` ran before anything listens; this service reads the envelopes in worker
processes (``recovery.background_pool``, or in a thread of the reactor's pool where there is no
such pool, or once it broke), and hands each chunk, in queue-id order and one per turn of the
reactor, to ``file`` (the scheduler: its messages are tried from then on), then calls
``done`` and ``Recovery.report``, and ``Recovery.settle`` in a thread.  A chunk whose reading
failed is read again after ``RETRY_AFTER``; one whose filing failed (part of it may be queued)
never is: the load gives up (``gave_up``) and the rest waits on disk for the next start-up.  A
stop in the middle leaves the rest on disk likewise (the pin and the snapshot as they were).

The reactor is injected; the worker processes' results come back through the pool's own
thread and are passed to the reactor with ``callFromThread``.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from twisted.application import service
from twisted.internet import defer, threads
from twisted.logger import Logger
from twisted.python.failure import Failure

from mxbackup.queue.recovery import Chunk, background_pool, read_chunk, submit, with_names
from mxbackup.queue.recoverysteps import Recovery

log = Logger()

# Envelopes per chunk: filing one takes a turn of the reactor (10,000 took up to 80 ms with
# 677,000 queued, a stall of acceptance), so smaller ones than a load before listening uses.
CHUNK = 2_500
RETRY_AFTER = 60.0  # seconds before a chunk whose reading failed is read again
AHEAD_PER_READER = 2  # chunks given to the readers ahead of the filing, per reader process
# Chunks filed between two calls of ``trim`` (``heap.give_back``, a few ms): what filing
# frees (the readers' lists, tables that grew) stays resident in the C heap until trimmed,
# and a million's load peaked 35-40 MB above what it left once trimmed at its end.
TRIM_EVERY = 20


class BackgroundLoad(service.Service):
    def __init__(
        self,
        reactor: Any,
        recovery: Recovery,
        file: Callable[[Chunk], None],
        done: Callable[[], None],
        workers: int,
        gave_up: Callable[[], None] = lambda: None,
        trim: Callable[[], object] = lambda: None,
    ) -> None:
        self._reactor = reactor
        self._recovery = recovery
        self._file = file
        self._done = done
        self._gave_up_hook = gave_up  # the rest waits on disk for the next start-up
        self._workers = workers
        self._trim = trim
        self.total = recovery.count
        self.loaded = 0  # envelopes read (filed, or set aside)
        self.set_aside = 0  # of which unreadable or torn: moved to corrupt/
        self.finished = False
        self.failed: str | None = None  # why the load stopped short (logged)
        self.retrying = False  # ``failed`` is a read tried again after RETRY_AFTER
        self._pool: ProcessPoolExecutor | None = None
        self._futures: list[Future | None] = []
        self._current: defer.Deferred | None = None
        self._retry: Any = None  # a failed read, tried again later
        self._started = 0.0

    def startService(self) -> None:
        super().startService()
        self._started = self._reactor.seconds()
        recovery = self._recovery
        self._batches = recovery.batches(CHUNK)
        self._pool = background_pool(self._workers)
        self._futures = [None] * len(self._batches)
        try:
            for index in range(AHEAD_PER_READER * self._workers):
                self._submit(index)
        except Exception:  # a pool that cannot start its processes: a thread reads
            self._drop_pool()
        how = f"{self._workers} worker processes" if self._pool else "a thread"
        recovery.announce(how + ", while accepting mail")
        self._step(0)

    def stopService(self) -> Any:
        self._drop_pool()
        if self._retry is not None and self._retry.active():
            self._retry.cancel()
        if self._current is not None:
            self._current.cancel()
        return super().stopService()

    def progress(self) -> dict[str, Any] | None:
        """For ``status``: None once the whole queue is loaded.  ``failed``: why the load
        stopped (the rest waits for the next start-up), or, with ``retrying``, why the last
        read failed (it is tried again)."""
        if self.finished:
            return None
        return {"loaded": self.loaded, "of": self.total, "failed": self.failed,
                "retrying": self.retrying}  # fmt: skip

    def _step(self, index: int) -> None:
        if not self.running:
            return
        if index == len(self._batches):
            self._finish()
            return
        d = self._read(index)
        d.addCallbacks(self._take, self._read_failed, (index,), None, (index,))
        d.addErrback(self._filing_failed, index)
        self._current = d

    def _read(self, index: int) -> defer.Deferred:
        names, span = self._batches[index]
        if self._pool is not None:
            future, self._futures[index] = self._futures[index], None  # nor its result after
            try:
                self._submit(index + AHEAD_PER_READER * self._workers)
            except Exception as e:  # the pool broke: this chunk and the rest in a thread
                self._to_thread(str(e))
            if future is not None and self._pool is not None:
                return self._from_future(future, names)
        recovery = self._recovery
        pool = self._reactor.getThreadPool()
        args = (recovery.path("env"), names, recovery.recent, recovery.logged, span)
        return threads.deferToThreadPool(self._reactor, pool, read_chunk, *args, own_process=False)

    def _submit(self, index: int) -> None:
        """Chunk ``index`` to the readers (only so many ahead of the filing: results the
        reactor has not filed yet are held twice, their ids copied through the pipe)."""
        if self._pool is not None and index < len(self._batches):
            recovery = self._recovery
            batch = self._batches[index]
            env = recovery.path("env")
            self._futures[index] = submit(self._pool, env, batch, recovery.recent, recovery.logged)

    def _from_future(self, future: Future, names: list[str]) -> defer.Deferred:
        d: defer.Deferred = defer.Deferred(lambda _: future.cancel())

        def fire(f: Future) -> None:
            if d.called:
                return  # cancelled meanwhile
            try:
                if f.cancelled():
                    raise defer.CancelledError()
                chunk = with_names(f.result(), names)
            except BaseException:
                d.errback(Failure())
            else:
                d.callback(chunk)

        future.add_done_callback(lambda f: self._reactor.callFromThread(fire, f))
        return d

    def _take(self, chunk: Chunk, index: int) -> None:
        if not self.running:
            return
        self._file(self._recovery.take(chunk))
        self._batches[index] = ([], None)  # its names are the queue's now
        self.loaded += len(chunk.qids) + len(chunk.unreadable)
        self.set_aside += len(chunk.unreadable)
        self.failed, self.retrying = None, False
        if index % TRIM_EVERY == TRIM_EVERY - 1:
            self._trim()
        self._reactor.callLater(0, self._step, index + 1)  # the next in a turn of its own

    def _read_failed(self, failure: Failure, index: int) -> None:
        """Reading a chunk failed (nothing of it filed): a broken pool leaves the rest to a
        thread; a thread's failure is tried again after ``RETRY_AFTER``."""
        if failure.check(defer.CancelledError) or not self.running:
            return
        if self._pool is not None:  # a worker killed, or the pool broken: a thread goes on
            self._to_thread(failure.getErrorMessage())
            self._step(index)
            return
        self.failed, self.retrying = failure.getErrorMessage(), True
        log.failure("queue load: reading failed, tried again in {after:.0f} s; {left} queued "
                    "messages wait on disk meanwhile", failure, after=RETRY_AFTER,
                    left=self.total - self.loaded)  # fmt: skip
        self._retry = self._reactor.callLater(RETRY_AFTER, self._step, index)

    def _filing_failed(self, failure: Failure, index: int) -> None:
        """Filing a chunk failed (part of it may be filed: never filed again): the rest
        waits on disk for the next start-up."""
        self._gave_up(failure, f"chunk {index}")

    def _gave_up(self, failure: Failure, where: str) -> None:
        self.failed, self.retrying = failure.getErrorMessage(), False
        self._drop_pool()
        log.failure("queue load stopped ({where}): {left} queued messages wait on disk for "
                    "the next start-up", failure, where=where,
                    left=self.total - self.loaded)  # fmt: skip
        self._gave_up_hook()

    def _finish(self) -> None:
        self._drop_pool()
        self._batches, self._futures = [], []
        try:
            self._done()
            self._recovery.report()
        except Exception:
            self._gave_up(Failure(), "at its end")
            return
        pool = self._reactor.getThreadPool()
        d = threads.deferToThreadPool(self._reactor, pool, self._recovery.settle)
        d.addCallbacks(self._settled, self._unsettled)
        self._current = d

    def _settled(self, _: None) -> None:
        self._current = None
        self.finished = True  # (a stop before this writes no snapshot: ``settle`` removes it)
        log.info("queue loaded: {n} messages in {seconds:.1f} s while accepting mail{aside}",
                 n=self.loaded - self.set_aside,
                 seconds=self._reactor.seconds() - self._started,
                 aside=f" ({self.set_aside} set aside)" if self.set_aside else "")  # fmt: skip

    def _unsettled(self, failure: Failure) -> None:
        if failure.check(defer.CancelledError):
            return
        self.failed, self.retrying = failure.getErrorMessage(), False  # all queued; pin stays
        log.failure("queue load: the spool could not be settled", failure)

    def _to_thread(self, error: str) -> None:
        log.warn("queue load: the reader processes failed ({error}); reading the rest in a "
                 "thread", error=error)  # fmt: skip
        self._drop_pool()

    def _drop_pool(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None
