"""Queue administration (control socket, manhole) against the scheduler's world."""

from __future__ import annotations

import pytest
from outbound_world import World
from twisted.internet import defer

from helpers import spool_files
from mxbackup.queue.envelope import Envelope


@pytest.fixture
def w(tmp_path):
    w = World(tmp_path)
    w.deliver.up = False  # mail stays queued
    return w


def envelope_on_disk(w: World, qid: str) -> Envelope:
    return Envelope.from_json((w.root / "env" / qid).read_bytes())


def refusal(command, qid) -> BaseException:
    """What a command raises, or its Deferred fails with (the control socket sees both)."""
    try:
        d = command(qid)
    except Exception as e:  # noqa: BLE001
        return e
    got: list = []
    if isinstance(d, defer.Deferred):
        d.addBoth(got.append)  # consumed here: no unhandled error
    return got[0].value if got else None


def test_unknown_or_in_flight_messages_are_refused(w):
    commands = (w.admin.hold, w.admin.release, w.admin.delete, w.admin.bounce_now)
    for command in (*commands, w.admin.flush_message):
        error = refusal(command, "nope")
        assert isinstance(error, KeyError) and "no message nope in the queue" in str(error)
    w.deliver.up = True
    w.deliver.hold = True
    env = w.queue()
    w.advance(1)
    for command in (*commands, w.admin.flush_message):
        error = refusal(command, env.id)
        assert isinstance(error, ValueError) and "being delivered right now" in str(error)


def test_hold_keeps_it_from_being_tried_and_release_tries_it_at_once(w):
    env = w.queue()
    w.advance(1)
    assert env.recipients[0].attempts == 1
    assert w.admin.hold(env.id).result is True
    assert envelope_on_disk(w, env.id).held
    w.scheduler.flush("example.com")
    w.advance(20 * 60)
    assert env.recipients[0].attempts == 1  # held: neither tried nor counted
    w.deliver.up = True
    assert w.admin.release(env.id).result is True
    w.advance(1)
    assert w.scheduler.queue == {} and w.scheduler.stats.delivered == 1


def test_delete_removes_it_without_a_dsn(w):
    env = w.queue()
    w.advance(1)
    assert w.admin.delete(env.id).result is True
    assert spool_files(w.root, "env") == [] == spool_files(w.root, "new")
    assert w.scheduler.queue == {} and w.scheduler.depth_by_target() == {}
    assert w.dsns() == []


def test_bounce_now_returns_it_to_the_sender_with_the_last_reply(w):
    env = w.queue(rcpts=("a@example.com", "b@example.com"))
    w.advance(1)
    assert w.admin.bounce_now(env.id).result is True
    (dsn,) = w.dsns()
    blocks = dsn.get_payload()[1].get_payload()[1:]
    assert [b["Final-Recipient"] for b in blocks] == [
        "rfc822; a@example.com",
        "rfc822; b@example.com",
    ]
    assert all(b["Status"] == "5.0.0" for b in blocks)
    assert blocks[0]["Diagnostic-Code"] == (
        "X-mxbackup; 5.0.0 given up by the administrator; last reply: connect: connection refused"
    )
    assert env.id not in spool_files(w.root, "env") and env.id not in w.scheduler.queue
    assert w.scheduler.stats.bounced == 2


def test_flush_message_makes_it_due_now(w):
    env = w.queue()
    w.advance(1)
    w.deliver.up = True
    w.scheduler.targets["example.com"].down_since = 0.0  # as if a probe had found it back
    assert w.admin.flush_message(env.id) is True
    w.advance(1)
    assert w.scheduler.queue == {}


def test_message_deleted_while_its_dsn_is_queued_is_not_written_back(tmp_path):
    """The operator deletes a message while the DSN for one of its recipients is being
    queued: the settle that follows must not write its envelope again (an orphan env/)."""
    w = World(tmp_path)
    w.deliver.reply = lambda rcpt: (550, "5.1.1 no") if rcpt.startswith("bad") else (451, "4.0.0")
    held: list[defer.Deferred] = []

    def notify(envelope, rcpts, now, action):
        d: defer.Deferred = defer.Deferred()
        held.append(d)
        return d

    w.scheduler.dsn.notify = notify
    env = w.queue(rcpts=("bad@example.com", "later@example.com"))
    w.advance(1)
    assert len(held) == 1  # the DSN is on its way; the message is no longer in flight
    w.admin.delete(env.id)
    held[0].callback(None)
    assert spool_files(w.root, "env") == [] and spool_files(w.root, "new") == []
    assert env.id not in w.scheduler.queue


def test_a_held_message_is_not_reported_as_flushed(w):
    """Regression (issue 15): ``queue flush ID``, ``queue flush`` and ETRN reported held
    messages as flushed although nothing would try them."""
    held, other = w.queue(), w.queue()
    w.advance(1)
    w.admin.hold(held.id)
    error = refusal(w.admin.flush_message, held.id)
    assert isinstance(error, ValueError) and "is held" in str(error)
    assert w.scheduler.flush("example.com") == 1  # the other one only
    assert w.scheduler.flush() == 1
    assert other.id != held.id


def test_flushing_packed_messages_leaves_them_packed(w, monkeypatch):
    from mxbackup.outbound import envelopes

    monkeypatch.setattr(envelopes, "KEEP", 0)
    w.deliver.up = False
    ids = [w.queue(rcpts=(f"u{i}@example.com",)).id for i in range(5)]
    w.advance(2)
    assert w.scheduler.queue.objects() == 0
    for qid in ids:
        w.admin.flush_message(qid)
    assert w.scheduler.queue.objects() == 0  # read, not unpacked for good
    assert all(w.scheduler.backlog.due.when((qid, "example.com")) is not None for qid in ids)


def test_a_hold_that_could_not_be_written_is_doubted(tmp_path):
    """Issue 17 (review of the start-up snapshot): held in memory, not on disk: the clean
    stop's snapshot leaves the message out, and the next start-up reads its file."""
    from outbound_world import HeldRunner

    runner = HeldRunner()
    w = World(tmp_path, runner=runner)
    w.deliver.up = False
    qid = w.queue().id
    runner.fail = OSError(28, "No space left on device")
    assert isinstance(refusal(w.admin.hold, qid), OSError)
    assert w.scheduler.queue.doubted == {qid}
    assert envelope_on_disk(w, qid).held is False
