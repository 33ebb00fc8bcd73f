"""Recording outcomes: per-recipient state, untried tries, and results in batches."""

from __future__ import annotations

import pytest
from outbound_world import MINUTE, World

from helpers import spool_files
from mxbackup.queue.envelope import Envelope
from mxbackup.wire.contract import Attempt, Outcome

BROKEN = Attempt(True, "primary.test[127.0.0.1]:25", "mail: connection lost", broken=True)


def envelope_on_disk(w: World, qid: str) -> Envelope:
    return Envelope.from_json((w.root / "env" / qid).read_bytes())


@pytest.fixture
def w(tmp_path):
    return World(tmp_path, routes={"retries": 1, "minutes_between_retries": 1})


def test_the_last_try_not_reached_is_taken_back_and_not_bounced(w):
    w.deliver.reply = lambda rcpt: (451, "4.3.0 busy")
    env = w.queue()
    w.advance(1)
    rcpt = env.recipients[0]
    assert (rcpt.attempts, rcpt.state) == (1, "pending")
    w.deliver.hold = True
    w.advance(MINUTE)
    assert rcpt.attempts == 2 and rcpt.next_attempt == 0.0  # counted as the last try ...
    w.deliver.pending.pop().end(BROKEN)  # ... but the session broke before it began
    assert (rcpt.attempts, rcpt.state) == (1, "pending") and rcpt.next_attempt > 0
    assert w.dsns() == [] and w.scheduler.stats.bounced == 0


def test_a_try_made_due_by_a_flush_is_not_counted_when_the_target_is_down(w):
    w.deliver.up = False
    env = w.queue()
    w.advance(1)
    assert env.recipients[0].attempts == 1
    w.scheduler.targets["example.com"].next_probe = w.clock.seconds() + 3600
    w.scheduler.flush("example.com")
    w.advance(1)
    assert env.recipients[0].attempts == 1  # not due by its own schedule: no try to count


def test_the_outcome_of_a_message_deleted_meanwhile_is_dropped(w):
    w.deliver.hold = True
    env = w.queue()
    w.advance(1)
    session = w.deliver.pending.pop()
    w.scheduler.backlog.forget(env)  # as the administrator's delete would, were it allowed
    session.finish(0, Outcome("delivered", 250, "2.0.0 ok"))
    session.done.callback(BROKEN)
    assert not w.scheduler.backlog.inflight.busy(env.id)
    assert w.scheduler.stats.delivered == 0 and env.id in spool_files(w.root, "env")


def test_a_recording_that_raises_at_once_leaves_the_message_for_a_retry(w, monkeypatch):
    """``Recorder.record`` is no generator: an error raised before its first Deferred is
    still logged and the message is tried again in a minute, not left in flight."""
    from mxbackup.outbound.recorder import RECORD_RETRY

    w.deliver.hold = True
    env = w.queue()
    w.advance(1)
    session = w.deliver.pending.pop()

    def broken(key, result):
        raise RuntimeError("a bug in recording")

    monkeypatch.setattr(w.scheduler.recorder, "_record", broken)
    requeued: list = []
    monkeypatch.setattr(w.scheduler.backlog, "requeue", lambda *a: requeued.append(a))
    session.finish(0, Outcome("delivered", 250, "2.0.0 ok"))
    session.done.callback(BROKEN)
    assert requeued == [(env.id, "example.com", w.clock.seconds() + RECORD_RETRY)]
    assert env.id in spool_files(w.root, "env")  # nothing lost


def test_a_try_failed_while_the_target_is_down_keeps_a_recovered_in_flight_mark(tmp_path):
    """An envelope read from disk with ``inflight`` says a crash interrupted its delivery
    (and explains a duplicate).  A try that fails because the target is down sends nothing:
    the mark stays, in memory and in the next write of the envelope (the delay warning's)."""
    w = World(tmp_path, delivery={"delay_warning": 600})
    w.deliver.up = False
    env = w.queue()
    w.advance(5)
    assert w.scheduler.targets["example.com"].down
    rcpt = env.recipients[0]
    rcpt.inflight = True  # as recovered after a kill -9 in the middle of a delivery
    w.scheduler.backlog.schedule(env.id, "example.com", env.received_at + 700)
    w.advance(705)
    assert env.delay_warned  # the try failed without a connection, and the envelope was written
    assert rcpt.inflight
    on_disk = Envelope.from_json((w.root / "env" / env.id).read_bytes())
    assert on_disk.recipients[0].inflight
    assert not w.scheduler.backlog.inflight.busy(env.id)


@pytest.mark.parametrize(
    ("error", "level", "traceback"),
    [
        ("stopping", "info", False),
        ("disk", "error", False),
        ("bug", "critical", True),
    ],
)
def test_local_failures_are_logged_by_what_they_mean(error, level, traceback):
    """Regression: a clean stop logged the spool's refusal as a traceback; the server
    stopping is news, the disk refusing one error line, only a bug has a traceback."""
    from twisted.logger import LogLevel, globalLogPublisher
    from twisted.python.failure import Failure

    from mxbackup.outbound.recorder import _log_local_failure
    from mxbackup.queue.spoolproc import SpoolStopping

    exc = {
        "stopping": SpoolStopping(0, "spool process: the server is stopping"),
        "disk": OSError(28, "No space left on device"),
        "bug": KeyError("x"),
    }[error]
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        try:
            raise exc
        except Exception:  # noqa: BLE001
            _log_local_failure(Failure(), "recording the outcome of id={id} failed", id="Q1")
    finally:
        globalLogPublisher.removeObserver(events.append)
    (event,) = [e for e in events if e.get("id") == "Q1"]
    assert event["log_level"] == getattr(LogLevel, level)
    assert ("log_failure" in event) == traceback


def test_an_outcome_that_could_not_be_written_is_doubted(tmp_path):
    """Issue 17 (review of the start-up snapshot): the last try at a dead target failed the
    recipient in memory, then the DSN could not be queued (disk full): the file still says
    pending, so the clean stop's snapshot must not carry the envelope as memory holds it."""
    from outbound_world import HeldRunner

    runner = HeldRunner()
    w = World(tmp_path, routes={"retries": 0}, runner=runner)
    w.deliver.up = False
    ids = [w.queue().id, w.queue().id]
    runner.fail = OSError(28, "No space left on device")  # the first DSN's commit
    w.advance(1)
    assert len(w.dsns()) == 1  # one DSN queued, the other's commit failed
    [doubted] = [qid for qid in ids if qid in w.scheduler.queue]  # the other one is done
    assert w.scheduler.queue.peek(doubted).recipients[0].state == "failed"  # in memory only
    assert envelope_on_disk(w, doubted).recipients[0].state == "pending"
    assert w.scheduler.queue.doubted == {doubted}
