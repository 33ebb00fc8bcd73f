"""The retry scheduler, with time driven by Clock and delivery replaced by a script that
follows the delivery contract (``outbound_world``)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from outbound_world import MINUTE, REMOTE, HeldRunner, World
from twisted.internet import defer

from helpers import spool_files
from mxbackup.outbound.scheduler import APPLY_EVERY
from mxbackup.queue import tries
from mxbackup.queue.envelope import Envelope
from mxbackup.wire.contract import Attempt, Outcome


@pytest.fixture
def w(tmp_path):
    return World(tmp_path)


def test_first_try_at_once_and_message_removed_when_delivered(w):
    w.queue()
    w.advance(1)
    assert len(w.deliver.connections_with_mail) == 1
    assert spool_files(w.root, "new") == [] == spool_files(w.root, "env")
    assert w.scheduler.stats.delivered == 1


def test_451_then_250_delivers_once(w):
    replies = iter([(451, "4.3.0 try later"), (250, "2.0.0 Ok")])
    w.deliver.reply = lambda rcpt: next(replies)
    env = w.queue()
    w.advance(1)
    assert env.recipients[0].state == "pending"
    assert env.recipients[0].last_reply == "451 4.3.0 try later"
    w.advance(14 * MINUTE)
    assert len(w.deliver.connections_with_mail) == 1  # not before the interval
    w.advance(1 * MINUTE + 1)
    assert len(w.deliver.connections_with_mail) == 2
    assert env.recipients[0].state == "delivered"
    assert w.scheduler.stats.delivered == 1 and w.dsns() == []


def test_550_for_one_recipient_bounces_it_and_delivers_the_other(w):
    w.deliver.reply = lambda rcpt: (
        (550, "5.1.1 no such user")
        if rcpt.startswith("bad")
        else (
            250,
            "2.0.0 Ok",
        )
    )
    w.queue(rcpts=("good@example.com", "bad@example.com"))
    w.advance(1)
    (dsn,) = w.dsns()
    assert dsn["To"] == "s@sender.test"
    assert dsn.get_param("report-type") == "delivery-status"
    status = dsn.get_payload()[1].get_payload()
    rcpt_block = status[1]
    assert rcpt_block["Final-Recipient"] == "rfc822; bad@example.com"
    assert rcpt_block["Action"] == "failed" and rcpt_block["Status"] == "5.1.1"
    assert rcpt_block["Diagnostic-Code"] == "smtp; 550 5.1.1 no such user"
    assert rcpt_block["Remote-MTA"] == "dns; primary.test"
    # The original is gone (nothing pending); the DSN went out at once, from <> to the
    # sender, by MX lookup for sender.test (FakeNextHop.for_domain: 127.0.0.2).
    dsn_jobs = [job for jobs in w.deliver.calls for job in jobs if job.sender == ""]
    assert [job.recipients for job in dsn_jobs] == [("s@sender.test",)]
    assert spool_files(w.root, "env") == []


def test_fixed_interval_retries_then_bounce(tmp_path):
    w = World(tmp_path, routes={"retries": 2, "minutes_between_retries": 1})
    w.deliver.up = False
    env = w.queue()
    w.advance(1)
    assert env.recipients[0].attempts == 1
    w.advance(60)
    assert env.recipients[0].attempts == 2
    assert w.dsns() == []
    w.advance(60)
    assert env.recipients[0].attempts == 3  # the first try + 2 retries
    (dsn,) = w.dsns()
    assert dsn.get_payload()[1].get_payload()[1]["Status"] == "5.4.7"


def test_dead_primary_costs_one_connection_per_probe_interval_not_per_message(w):
    w.deliver.up = False
    for i in range(50):
        w.queue(rcpts=(f"u{i}@example.com",))
    w.advance(10 * MINUTE)
    # One failed connection (the first batch), then one probe every 30 s.
    assert len(w.deliver.connections_with_mail) <= 2
    assert 18 <= w.deliver.probes <= 21
    w.deliver.up = True
    w.advance(31)
    # The probe saw it back: the whole queue is flushed at once, in one connection.
    assert spool_files(w.root, "env") == []
    assert w.scheduler.stats.delivered == 50
    assert len(w.deliver.connections_with_mail[-1]) == 50


def test_successful_delivery_flushes_a_down_target(tmp_path):
    w = World(tmp_path, delivery={"probe_interval": 3600})
    w.deliver.up = False
    for i in range(5):
        w.queue(rcpts=(f"u{i}@example.com",))
    w.advance(2)
    w.deliver.up = True
    w.scheduler.flush("example.com")  # e.g. ETRN or an admin: probe now
    w.advance(2)
    assert w.scheduler.stats.delivered == 5


def test_concurrency_per_target_and_messages_per_connection(tmp_path):
    w = World(
        tmp_path, delivery={"max_connections_per_target": 3, "max_messages_per_connection": 4}
    )
    w.deliver.hold = True
    for i in range(25):
        w.queue(rcpts=(f"u{i}@example.com",))
    w.advance(1)
    # Slow start: a target not yet known to take mail gets one connection ...
    assert len(w.deliver.pending) == 1
    w.deliver.release()
    # ... and once that worked, up to the limit at once.
    assert len(w.deliver.pending) == 3
    assert all(len(session.jobs) <= 4 for session in w.deliver.pending)
    while w.deliver.pending:
        w.deliver.release()
        w.advance(1)
    assert w.scheduler.stats.delivered == 25
    assert max(len(jobs) for jobs in w.deliver.calls) == 4


def test_tick_cost_follows_what_is_due_not_queue_size(w, monkeypatch):
    w.deliver.up = False
    for i in range(500):
        w.queue(rcpts=(f"u{i}@example.com",))
    w.advance(2)  # all tried once, now scheduled 15 minutes ahead
    taken: list = []
    real = w.scheduler._take
    monkeypatch.setattr(w.scheduler, "_take", lambda *a: taken.append(a) or real(*a))
    pops_before = w.scheduler.backlog.due.filed()
    w.advance(5 * MINUTE)
    assert taken == []
    assert w.scheduler.backlog.due.filed() == pops_before  # nothing taken or scanned


def restarted(tmp_path, w: World, primary_up: bool, load: bool = True) -> World:
    """A new process on the same spool, at the same time (its queue read before listening;
    with ``load=False`` not yet: the test feeds it as a load in the background does)."""
    w2 = World(tmp_path)
    w2.clock.advance(w.clock.seconds() - w2.clock.seconds())
    w2.deliver.up = primary_up
    if load:
        w2.scheduler.load(w2.spool.recover())
    return w2


def tried_while_down(tmp_path, count: int) -> tuple[World, list]:
    """``count`` messages queued while the primary is down, each tried once (next try in 15
    minutes)."""
    w = World(tmp_path)
    w.deliver.up = False
    envs = [w.queue() for _ in range(count)]
    w.advance(1)
    return w, envs


def paced(monkeypatch, per_tick: int, per_turn: int = 100) -> None:
    """Small shares for the tries at a down target (``downpace``)."""
    from mxbackup.outbound import downpace

    monkeypatch.setattr(downpace, "PER_TICK", per_tick)
    monkeypatch.setattr(downpace, "PER_TURN", per_turn)


def test_restart_resumes_from_the_envelopes(tmp_path):
    w = World(tmp_path)
    w.deliver.up = False
    env = w.queue()
    w.advance(1)
    attempts, when = env.recipients[0].attempts, env.recipients[0].next_attempt
    w2 = restarted(tmp_path, w, primary_up=False)
    (loaded,) = w2.scheduler.queue.values()
    assert loaded.recipients[0].attempts == attempts == 1
    assert loaded.recipients[0].next_attempt == when
    assert not loaded.recipients[0].inflight
    w2.advance(14 * MINUTE)
    assert w2.deliver.connections_with_mail == []  # down: only probes
    assert w2.deliver.probes >= 1
    w2.deliver.up = True
    w2.advance(31)
    assert w2.scheduler.stats.delivered == 1


def test_restart_with_the_primary_up_delivers_at_once(tmp_path):
    w = World(tmp_path)
    w.deliver.up = False
    w.queue()
    w.advance(1)
    w2 = restarted(tmp_path, w, primary_up=True)
    w2.advance(2)  # the start-up probe answers: the queue is handed over now
    assert w2.scheduler.stats.delivered == 1


def chunks_of_one(w: World) -> list:
    """The queue as a load in the background reads it (``queue.background``), a message a
    chunk."""
    from mxbackup.queue.recovery import read_chunk

    recovery = w.spool.begin_recovery()
    env = recovery.path("env")
    return [
        read_chunk(env, names, recovery.recent, recovery.logged, span)
        for names, span in recovery.batches(1)
    ]


def test_a_big_queue_read_in_the_background_goes_back_as_it_is_read(tmp_path):
    """The primary is up when the backup restarts with a big queue: the first target met is
    probed at once and flushed, and the messages read after that flush are due as they come,
    before the load ends (they had waited for ``loaded``: 11-60 s at a million)."""
    w, envs = tried_while_down(tmp_path, 3)
    held = envs[-1]
    w.admin.hold(held.id)
    w2 = restarted(tmp_path, w, primary_up=True, load=False)
    chunks = chunks_of_one(w2)  # (ids made in the same second: in no particular order)
    (third,) = [c for c in chunks if c.qids == [held.id]]
    first, second = [c for c in chunks if c is not third]
    w2.scheduler.loading()
    w2.scheduler.load_chunk(first)
    w2.advance(2)  # the probe answers: flushed
    assert w2.scheduler.stats.delivered == 1
    w2.scheduler.load_chunk(second)
    w2.clock.advance(0)
    assert w2.scheduler.stats.delivered == 2  # due as it was read
    w2.scheduler.load_chunk(third)  # held: not flushed, as a flush leaves it
    when = w2.scheduler.backlog.due.when((held.id, "example.com"))
    assert when is not None and when > w2.clock.seconds() + 10 * MINUTE
    w2.scheduler.loading(False)


def test_a_down_primary_s_mail_read_in_the_background_keeps_its_times(tmp_path):
    w, _ = tried_while_down(tmp_path, 2)
    w2 = restarted(tmp_path, w, primary_up=False, load=False)
    first, second = chunks_of_one(w2)
    w2.scheduler.loading()
    w2.scheduler.load_chunk(first)
    w2.advance(2)  # probed: down
    w2.scheduler.load_chunk(second)
    w2.advance(2)
    assert w2.deliver.probes >= 1 and w2.scheduler.stats.delivered == 0
    assert w2.scheduler.stats.deferred == 0  # not tried: their next try is still ahead
    assert w2.scheduler.backlog.due.when((second.qids[0], "example.com")) > w2.clock.seconds()


def test_mail_read_after_its_flushed_target_went_down_keeps_its_times(tmp_path):
    """Flushed, then down: what is read next is not made due (each would get a failed try
    counted without connecting); the target's probes decide."""
    w, _ = tried_while_down(tmp_path, 2)
    w2 = restarted(tmp_path, w, primary_up=True, load=False)
    first, second = chunks_of_one(w2)
    w2.scheduler.loading()
    w2.scheduler.load_chunk(first)
    w2.advance(2)  # probed, flushed, delivered
    assert w2.scheduler.stats.delivered == 1
    w2.scheduler.health.failed(w2.scheduler.targets["example.com"], "gone", w2.clock.seconds(), 30)
    deferred = w2.scheduler.stats.deferred
    w2.scheduler.load_chunk(second)
    w2.clock.advance(0)
    assert w2.scheduler.backlog.due.when((second.qids[0], "example.com")) > w2.clock.seconds()
    assert w2.scheduler.stats.deferred == deferred


def test_a_target_met_during_another_probe_is_probed_when_the_load_ends(tmp_path):
    """Review: the load's first probe of a target is skipped while another probe of it (one
    that does not flush) runs; the end of the load probes what it met and never flushed."""
    w, _ = tried_while_down(tmp_path, 1)
    w2 = restarted(tmp_path, w, primary_up=True, load=False)
    (only,) = chunks_of_one(w2)
    w2.scheduler.loading()
    w2.scheduler.load_chunk(only)
    target = w2.scheduler.health.get("example.com")
    target.probing = True  # another probe under way: the start-up probe is dropped
    w2.advance(2)
    target.probing = False
    assert w2.scheduler.stats.delivered == 0
    w2.scheduler.loading(False)
    w2.advance(2)
    assert w2.scheduler.stats.delivered == 1


def test_attempt_interrupted_by_a_crash_is_retried_at_once(tmp_path):
    w = World(tmp_path)
    w.deliver.hold = True  # the attempt starts and never finishes: then the process dies
    env = w.queue()
    w.advance(1)
    assert env.recipients[0].inflight and env.recipients[0].attempts == 1
    w2 = World(tmp_path)
    w2.clock.advance(w.clock.seconds() - w2.clock.seconds())
    w2.deliver.hold = False
    w2.scheduler.load(w2.spool.recover())
    (loaded,) = w2.scheduler.queue.values()
    assert loaded.recipients[0].inflight  # the outcome was never written
    w2.advance(1)
    assert w2.scheduler.stats.delivered == 1  # retried at once, not in 15 minutes


@pytest.mark.parametrize(
    ("sender", "body"),
    [("", b""), ("s@sender.test", b"Auto-Submitted: auto-replied\r\nSubject: x\r\n\r\nbody\r\n")],
)
def test_no_bounce_to_null_sender_or_for_auto_submitted(w, sender, body):
    w.deliver.reply = lambda rcpt: (550, "5.1.1 no")
    w.queue(sender=sender, body=body)
    w.advance(1)
    assert w.dsns() == [] and spool_files(w.root, "env") == []


def test_queue_lifetime(tmp_path):
    w = World(tmp_path, routes={"retries": 1000, "max_queue_lifetime": 3600})
    w.deliver.reply = lambda rcpt: (451, "4.4.0 later")
    env = w.queue()
    w.advance(59 * MINUTE)
    assert w.dsns() == []
    w.advance(2 * MINUTE)
    assert env.recipients[0].state == "failed"
    assert len(w.dsns()) == 1


def test_delay_warning_once(tmp_path):
    w = World(tmp_path, delivery={"delay_warning": 1800})
    w.deliver.reply = lambda rcpt: (451, "4.4.0 later")
    env = w.queue()
    w.advance(46 * MINUTE)
    (notice,) = w.dsns()
    assert notice.get_payload()[1].get_payload()[1]["Action"] == "delayed"
    assert env.delay_warned and env.recipients[0].state == "pending"
    w.advance(60 * MINUTE)
    assert len(w.dsns()) == 1


def test_tick_survives_an_exception(w, monkeypatch):
    calls = []

    def boom():
        calls.append(1)
        raise RuntimeError("bug")

    monkeypatch.setattr(w.scheduler, "_tick", boom)
    w.advance(3)
    assert len(calls) == 3  # the LoopingCall kept running


def test_tries_without_connection_cost_no_disk_write_and_flush_reaches_them(tmp_path):
    """Regression: 433 of 2,000 messages stayed behind after the primary came back because
    the flush skipped those whose 'target is down' state was still being written; and each
    such write cost an fsync per message.  Untried failures now stay in memory."""
    w = World(tmp_path)
    w.deliver.up = False
    w.queue(rcpts=("first@example.com",))
    w.advance(1)  # the target is now known to be down
    writes: list = []
    real_update = w.spool.update
    w.spool.update = lambda envelope: writes.append(envelope) or real_update(envelope)
    envs = [w.queue(rcpts=(f"u{i}@example.com",)) for i in range(5)]
    w.advance(1)
    assert [e.recipients[0].attempts for e in envs] == [1] * 5  # counted...
    assert writes == []  # ...in memory only
    w.deliver.up = True
    w.scheduler.flush("example.com")
    w.advance(2)
    assert w.scheduler.stats.delivered == 6


def test_broken_session_marks_target_down_and_probe_flushes_the_rest(tmp_path):
    """The target takes the first message, then the connection breaks (reset, 421): the
    message in flight counts a try, the ones never started do not, and all of them are
    handed over as soon as the probe finds the target back, not after 15 minutes."""
    w = World(tmp_path, routes={"retries": 1})
    w.deliver.hold = True
    envs = [w.queue((f"u{i}@example.com",)) for i in range(3)]
    w.clock.advance(1)
    assert len(w.deliver.pending) == 1
    session = w.deliver.pending.pop()
    assert [j.qid for j in session.jobs] == [e.id for e in envs]
    session.finish(0, Outcome("delivered", 250, "2.0.0 ok"))
    broken = Outcome("tempfail", 0, "data: connection lost")
    session.finish(1, broken)
    untried = Outcome("tempfail", 0, "data: connection lost", tried=False)
    session.finish(2, untried)
    session.done.callback(Attempt(True, REMOTE, "data: connection lost", broken=True))
    target = w.scheduler.targets["example.com"]
    assert target.down
    assert envs[1].recipients[0].attempts == 1
    assert envs[2].recipients[0].attempts == 0  # never reached: not a try
    w.deliver.hold = False
    w.advance(31)  # the probe
    assert w.deliver.probes == 1
    assert not target.down
    assert w.scheduler.queue == {}  # both delivered at the flush, none bounced
    assert w.dsns() == []
    assert w.clock.seconds() < envs[0].received_at + 60


def test_a_try_taken_back_is_not_counted_again_by_a_restart(tmp_path):
    """The try log said the try was under way; it never reached the target (taken back,
    noted again with the lower count): a restart must not count it (retries: 1 would bounce)."""
    w = World(tmp_path, routes={"retries": 1})
    w.deliver.hold = True
    envs = [w.queue((f"u{i}@example.com",)) for i in range(2)]
    w.clock.advance(1)
    session = w.deliver.pending.pop()
    session.finish(0, Outcome("delivered", 250, "2.0.0 ok"))
    session.finish(1, Outcome("tempfail", 0, "data: connection lost", tried=False))
    session.done.callback(Attempt(True, REMOTE, "data: connection lost", broken=True))
    assert envs[1].recipients[0].attempts == 0
    w2 = restarted(tmp_path, w, primary_up=False)
    (loaded,) = w2.scheduler.queue.values()
    assert loaded.recipients[0].attempts == 0 and not loaded.recipients[0].inflight


def test_finished_transactions_are_recorded_while_the_connection_goes_on(tmp_path):
    """Every APPLY_EVERY finished transactions are recorded (envelopes removed) while the
    connection still carries the others: a crash then repeats at most that many."""
    w = World(tmp_path)
    w.deliver.hold = True
    n = APPLY_EVERY + 5
    envs = [w.queue((f"u{i}@example.com",)) for i in range(n)]
    w.clock.advance(1)
    session = w.deliver.pending.pop()
    assert len(session.jobs) == n
    for i in range(APPLY_EVERY):
        session.finish(i, Outcome("delivered", 250, "2.0.0 ok"))
    left = spool_files(w.root, "env")
    assert all(e.id not in left for e in envs[:APPLY_EVERY])
    assert all(e.id in left for e in envs[APPLY_EVERY:])
    for i in range(APPLY_EVERY, n):
        # fewer than APPLY_EVERY: recorded at the end of the connection
        session.finish(i, Outcome("delivered", 250, "2.0.0 ok"))
    assert all(e.id in spool_files(w.root, "env") for e in envs[APPLY_EVERY:])
    session.done.callback(Attempt(True, REMOTE))
    assert w.scheduler.queue == {}
    assert w.scheduler.stats.delivered == n  # none counted twice
    assert spool_files(w.root, "env") == []


def test_outcome_that_cannot_be_written_is_written_again_later(tmp_path):
    """Delivered, but the spool refuses the removal (disk trouble): the outcome stands in
    memory and its recording is tried again a minute later; the message is not resent."""
    w = World(tmp_path)
    real_remove = w.spool.remove
    failures = [OSError(5, "Input/output error")]

    def remove(qid):
        if failures:
            return defer.fail(failures.pop())
        return real_remove(qid)

    w.spool.remove = remove
    env = w.queue()
    w.advance(1)
    assert len(w.deliver.connections_with_mail) == 1
    assert env.id in spool_files(w.root, "env")  # the removal failed
    w.advance(61)
    assert spool_files(w.root, "env") == [] and w.scheduler.queue == {}
    assert len(w.deliver.connections_with_mail) == 1  # delivered once


def test_a_flush_during_the_recording_of_an_outcome_is_not_lost(tmp_path):
    """The target is flushed (a probe found it back) while a message's attempt is still in
    flight; the attempt ends in a tempfail: the message is due at once, not in 15 minutes."""
    w = World(tmp_path)
    w.deliver.hold = True
    env = w.queue()
    w.clock.advance(1)
    session = w.deliver.pending.pop()
    assert w.scheduler.flush("example.com") == 0  # in flight: passed over ...
    session.finish(0, Outcome("tempfail", 451, "4.3.0 busy"))
    session.done.callback(Attempt(True, REMOTE))
    assert env.recipients[0].attempts == 1
    w.deliver.hold = False
    w.deliver.reply = lambda rcpt: (250, "2.0.0 Ok")
    w.advance(2)  # ... but remembered: retried now, not at minutes_between_retries
    assert w.scheduler.queue == {}
    assert env.recipients[0].attempts == 2


# -- the delivery contract, as the scheduler uses it ---------------------------------------------
def test_a_try_is_noted_in_the_try_log_and_nothing_is_written_before_it(tmp_path):
    """Before the connection: one appended line (the try counted), no envelope rewrite and
    no round to wait for; the envelope is written with the outcome."""
    runner = HeldRunner()
    w = World(tmp_path, runner=runner)
    w.deliver.up = False  # a try that fails: the outcome is an envelope update
    env = w.queue()
    runner.hold = True  # no round completes from here on
    w.advance(1)
    assert env.recipients[0].attempts == 1
    assert len(runner.held) == 1  # the outcome's write, nothing before it
    assert tries.read(str(w.root)) == {env.id: {0: 1}}
    on_disk = Envelope.from_json((w.root / "env" / env.id).read_bytes())
    assert on_disk.recipients[0].attempts == 0 and not on_disk.recipients[0].inflight


def test_delivery_is_not_held_up_by_the_spool(tmp_path):
    """A round on the disk does not delay the first MAIL (the removal waits, not the send)."""
    runner = HeldRunner()
    w = World(tmp_path, runner=runner)
    w.queue()
    runner.hold = True
    w.advance(1)
    assert len(w.deliver.sent) == 1 and len(w.scheduler.queue) == 1  # removal on its way
    runner.release()
    assert w.scheduler.queue == {} and w.scheduler.stats.delivered == 1


def test_a_try_log_that_cannot_be_written_does_not_stop_delivery(tmp_path):
    w = World(tmp_path)
    (w.root / tries.FILE).mkdir()  # open() fails: EISDIR
    env = w.queue()
    w.advance(1)
    assert w.scheduler.stats.delivered == 1 and env.recipients[0].attempts == 1


def test_a_session_that_fails_locally_leaves_nothing_in_flight(w):
    w.deliver.hold = True
    env = w.queue()
    w.advance(1)
    session = w.deliver.pending.pop()
    session.done.errback(RuntimeError("client bug"))  # breaks the contract: done never fails
    assert not w.scheduler.backlog.inflight.busy(env.id) and not env.recipients[0].inflight
    assert w.scheduler.targets["example.com"].active == 0
    w.deliver.hold = False
    w.advance(61)
    assert w.scheduler.queue == {}  # tried again a minute later


def test_try_counts_kept_in_memory_are_written_at_stop_and_go_on_after_a_restart(tmp_path):
    """Regression (issue 15 item 4): after a restart the logs said attempt=1 again, the
    tries made while the target was down having been counted in memory only."""
    from twisted.logger import globalLogPublisher

    w = World(tmp_path)
    w.deliver.up = False
    env = w.queue()
    w.advance(1)  # the first try: written (attempts 1)
    w.advance(46 * MINUTE)  # three more, without connecting: in memory only
    assert env.recipients[0].attempts == 4
    done = []
    w.scheduler.stop().addCallback(done.append)
    assert done
    w2 = restarted(tmp_path, w, primary_up=False)
    (loaded,) = w2.scheduler.queue.values()
    assert loaded.recipients[0].attempts == 4
    lines: list[str] = []
    observer = lambda event: lines.append(str(event.get("attempt", "")))  # noqa: E731
    globalLogPublisher.addObserver(observer)
    try:
        w2.advance(16 * MINUTE)
    finally:
        globalLogPublisher.removeObserver(observer)
    assert [x for x in lines if x] == ["5"]


def test_a_big_flush_is_taken_a_few_at_a_time_without_waiting_for_ticks(tmp_path):
    """A flush of a million must not put a million entries in flight in one tick: a tick
    takes twice what the connections carry at once; a connection that finds nothing waiting
    asks for the next tick at once, so the drain does not pause between ticks."""
    w = World(
        tmp_path,
        delivery={"max_connections_per_target": 1, "max_messages_per_connection": 2},
    )
    w.deliver.up = False
    for i in range(30):
        w.queue(rcpts=(f"u{i}@example.com",))
    w.advance(2)
    inflight = w.scheduler.backlog.inflight
    most = []
    real_wait = inflight.wait
    inflight.wait = lambda qid, key: most.append(inflight.waiting(key)) or real_wait(qid, key)
    w.deliver.up = True
    w.scheduler.flush("example.com")
    w.clock.advance(0)  # the flush's own tick, and those the connections ask for: no more
    assert w.scheduler.stats.delivered == 30
    assert max(most) < 4  # 2 x 1 connection x 2 messages


def test_tries_at_a_dead_target_are_paced_by_the_clock_not_by_arrivals(tmp_path, monkeypatch):
    """A restart with a big overdue queue behind a dead primary: each accepted message asks
    for a tick, and those ticks must not work through the overdue tries (a stall per
    message); the clock's ticks take them ``downpace.PER_TICK`` at a time."""
    paced(monkeypatch, per_tick=3)
    w, envs = tried_while_down(tmp_path, 10)
    w.advance(15 * MINUTE)  # all ten are due again at once (overdue)
    attempts = sum(e.recipients[0].attempts for e in envs)
    for i in range(3):  # arrivals meanwhile: their ticks take nothing of the dead target's
        w.scheduler.wakeup(w.queue(rcpts=(f"new{i}@example.com",)))
        w.clock.advance(0)
    assert sum(e.recipients[0].attempts for e in envs) == attempts
    w.advance(1)
    assert sum(e.recipients[0].attempts for e in envs) <= attempts + 3
    w.advance(5)
    assert all(e.recipients[0].attempts == 2 for e in envs)


def test_a_stop_that_writes_the_snapshot_leaves_the_try_counts_to_it(tmp_path, monkeypatch):
    """Issue 17 (goal 4): after a long outage nearly every queued message has try counts in
    memory only, and a stop rewrote every such envelope (a million: minutes, and systemd
    kills a stop after 90 s).  The stop's snapshot carries them: only a message the next
    start-up will read from its file (here one with a line in the try log) is written."""
    import os
    import time

    from helpers import sync_thread
    from mxbackup.outbound import envelopes
    from mxbackup.queue import tries
    from mxbackup.queue.spool import Spool

    monkeypatch.setattr(envelopes, "KEEP", 0)  # every idle envelope packed
    w = World(tmp_path)
    w.deliver.up = False
    a, b = w.queue().id, w.queue().id  # (no reference kept: they can be packed)
    w.advance(1)  # the first try: written (attempts 1)
    w.advance(46 * MINUTE)  # three more, without connecting: in memory only
    w.scheduler.backlog.compact()
    assert w.scheduler.queue.objects() == 0  # both packed
    # the first tries' lines gone with rotations but b's: b's file will be read, not taken
    (tmp_path / "spool" / tries.FILE).write_bytes(f"{b} 1.000 0:1\n".encode())
    done: list = []
    w.scheduler.stop(for_snapshot=True).addCallback(done.append)
    assert done and w.scheduler.recorder.left_to_snapshot == 1
    env = tmp_path / "spool" / "env"
    assert b'"attempts":1' in (env / a).read_bytes()  # left to the snapshot
    assert b'"attempts":4' in (env / b).read_bytes()
    old = time.time() - 3600  # (a file written in the last seconds is read, not taken)
    os.utime(env / a, (old, old))
    w.spool.write_snapshot(w.scheduler.queue.packed_items())
    recovered = Spool(str(tmp_path / "spool"), sync_thread).recover()  # the next start-up
    assert [e.recipients[0].attempts for e in recovered] == [4, 4]


def test_what_waited_for_a_connection_when_the_target_went_down_is_counted_by_paced_ticks(
    tmp_path, monkeypatch
):
    """A restart with a big overdue queue: the first tick gives thousands to connections, the
    first connection fails, and failing all those waiting in that one turn stalled every
    client for 200-300 ms.  They are due again, their tries counted by the paced ticks."""
    paced(monkeypatch, per_tick=4, per_turn=2)
    w = World(tmp_path)
    w.deliver.up = False
    envs = [w.queue(rcpts=(f"u{i}@example.com",)) for i in range(6)]
    key = next(iter(w.scheduler.backlog.keys()))
    for qid, k in list(w.scheduler.backlog.due_now(w.clock.seconds(), lambda _: 100)):
        w.scheduler.backlog.inflight.wait(qid, k)  # taken by a tick, waiting for connections
    w.scheduler._mark_down(w.scheduler.health.get(key), "connection refused")
    assert w.scheduler.backlog.inflight.waiting(key) == 0
    assert all(e.recipients[0].attempts == 0 for e in envs)  # nothing counted in that turn
    w.clock.advance(1)  # a tick: 4 of them, 2 per turn
    assert sorted(e.recipients[0].attempts for e in envs) == [0, 0, 1, 1, 1, 1]
    w.clock.advance(1)
    assert all(e.recipients[0].attempts == 1 for e in envs)


def test_nothing_is_tried_after_the_stop(tmp_path):
    """Review: a kick, a probe's flush or a connection's end ran ticks and started
    connections after ``stop`` (whose outcomes the stopping spool process then refused, and
    which unpacked envelopes the snapshot was to carry)."""
    w = World(tmp_path)
    w.deliver.up = True
    w.queue()
    w.scheduler.stop()
    w.scheduler.flush()
    w.clock.advance(0)
    w.advance(5)
    assert w.deliver.calls == [] and len(w.scheduler.queue) == 1
    w.scheduler.start()  # (a service started again in the same process)
    w.advance(1)
    assert w.deliver.calls and len(w.scheduler.queue) == 0


def test_a_ticks_tries_at_a_dead_target_are_spread_over_turns(tmp_path, monkeypatch):
    """A tick's share of the tries at a dead target is taken ``PER_TURN`` per turn of the
    reactor (a thousand in one turn stalled acceptance for ~60-100 ms every second behind a
    dead primary with a million queued); a turn that takes less than its share is the last."""
    paced(monkeypatch, per_tick=6, per_turn=2)
    w, envs = tried_while_down(tmp_path, 10)
    turns: list[int] = []
    take_due = w.scheduler._take_due

    def counted(now: float, started: set[str]) -> bool:
        before = sum(e.recipients[0].attempts for e in envs)
        more = take_due(now, started)
        turns.append(sum(e.recipients[0].attempts for e in envs) - before)
        return more

    w.scheduler._take_due = counted  # type: ignore[method-assign]
    w.clock.advance(15 * MINUTE)  # one tick, all ten overdue
    assert turns == [2, 2, 2]
    turns.clear()
    w.clock.advance(1)
    assert turns == [2, 2, 0]
    assert all(e.recipients[0].attempts == 2 for e in envs)


def test_a_later_turn_takes_only_tries_at_down_targets_and_a_stop_ends_them(tmp_path, monkeypatch):
    """Review: in a tick's later turns an up target gets no room (its entries would be
    taken into flight with no connection started for them), and ``stop`` cancels the turns
    still to come (no try is counted after it)."""
    paced(monkeypatch, per_tick=6, per_turn=2)
    w, envs = tried_while_down(tmp_path, 10)
    down_key = next(iter(w.scheduler.health.targets))
    w.scheduler.down.later = True
    assert w.scheduler._room(down_key) == 2 and w.scheduler._room("up.example") == 0
    w.scheduler.down.later = False
    assert w.scheduler._room("up.example") > 0
    before = sum(e.recipients[0].attempts for e in envs)
    w.clock.rightNow += 15 * MINUTE  # all overdue; the clock's own calls not run yet
    w.scheduler.tick()  # the tick's own turn: 2, the rest to come
    w.scheduler.stop()
    w.clock.advance(0)
    assert sum(e.recipients[0].attempts for e in envs) == before + 2


def test_a_connection_has_its_messages_warmed_before_it_dials(w):
    """``queue.prefetch``: the files of a connection's jobs, in the order they will be sent,
    are handed to the prefetcher before the connection is made (a cold file read on the
    reactor thread stops the whole server)."""
    events: list[Any] = []

    class Recording:
        def __call__(self, files: list[tuple[str, int]]) -> None:
            events.append(("warm", files))

    w.scheduler.prefetcher = Recording()  # type: ignore[assignment]
    real_deliver = w.scheduler.dialer.deliver

    def deliver(*args: Any) -> Any:
        events.append(("dial", [j.qid for j in args[2]]))
        return real_deliver(*args)

    w.scheduler.dialer.deliver = deliver
    first, second = w.queue(), w.queue(body=b"Subject: two\r\n\r\n" + b"x" * 100 + b"\r\n")
    w.advance(1)
    assert [kind for kind, _ in events] == ["warm", "dial"]
    warmed = events[0][1]
    assert [Path(path).name for path, _ in warmed] == [first.id, second.id] == events[1][1]
    assert [size for _, size in warmed] == [first.size, second.size]


def test_the_stop_ends_the_prefetcher(w):
    """``queue.prefetch``: its process ends with the ticks (nothing is warmed after them)."""
    from mxbackup.queue.prefetchproc import Prefetcher

    spawned: list[Any] = []

    def spawn(*a: Any, **k: Any) -> Any:
        spawned.append(a)
        return SimpleNamespace(pid=1, writeSequence=lambda data: None, closeStdin=lambda: None)

    w.clock.spawnProcess = spawn  # type: ignore[attr-defined]
    w.scheduler.prefetcher = Prefetcher(w.clock)
    w.scheduler.stop()
    w.scheduler.prefetcher([("/nonexistent", 1)])
    assert spawned == [] and not w.scheduler.prefetcher.started
