"""The control socket's commands on a Clock world: selectors, bulk actions, pause, status,
summary, show --body (the socket and the CLI are in test_control.py)."""

from __future__ import annotations

import base64

import pytest
from outbound.outbound_world import MINUTE, World
from twisted.internet import defer
from twisted.python.failure import Failure

from mxbackup.ops import status
from mxbackup.ops.commands import Commands
from mxbackup.outbound import backlog as backlog_module
from mxbackup.outbound import selection
from mxbackup.turns import at_once


def done(result):
    """The result of a command (a Deferred fired by now, on the synchronous spool)."""
    if not isinstance(result, defer.Deferred):
        return result
    out = []
    result.addBoth(out.append)
    (value,) = out
    if isinstance(value, Failure):
        value.raiseException()
    return value


@pytest.fixture
def w(tmp_path):
    world = World(tmp_path)
    world.deliver.up = False  # everything stays queued
    world.commands = Commands(world.scheduler, world.admin, world.spool, reload=None)
    return world


def test_bulk_hold_release_by_sender_and_all(w):
    a = w.queue(sender="a@sender.test")
    b = w.queue(sender="b@sender.test")
    result = done(w.commands.hold(sender="a@sender.test"))
    assert result == {"held": 1, "matched": 1, "held_skipped": 0, "errors": [], "error_count": 0}
    assert a.held and not b.held
    assert done(w.commands.flush(all=True, sender="a@sender.test"))["held_skipped"] == 1
    assert done(w.commands.release(all=True))["released"] == 2
    assert not a.held


def test_bulk_delete_older_than_and_ids(w):
    old = w.queue()
    w.advance(2 * 3600)
    new = w.queue()
    assert done(w.commands.delete(older_than=3600.0))["deleted"] == 1
    assert set(w.scheduler.queue) == {new.id}
    result = done(w.commands.delete(ids=[new.id]))
    assert result["deleted"] == 1 and old.id not in w.scheduler.queue
    with pytest.raises(KeyError):
        done(w.commands.delete(ids=["NOPE"]))


def test_bulk_bounce_by_route_sends_dsns(w):
    w.queue(rcpts=("u@example.com",))
    w.queue(rcpts=("v@example.com",))
    assert done(w.commands.bounce(route="example.com"))["bounced"] == 2
    assert len(w.dsns()) == 2
    with pytest.raises(KeyError, match="no route"):
        done(w.commands.bounce(route="elsewhere.test"))


def test_no_selector_is_refused_but_flush_means_everything(w):
    w.queue()
    with pytest.raises(ValueError, match="say which messages"):
        done(w.commands.delete())
    assert done(w.commands.flush())["flushed"] == 1


def test_pause_and_resume_by_route(w):
    assert w.commands.pause("example.com") == {"global": False, "routes": ["example.com"]}
    assert done(w.commands.status())["targets"][0]["paused"] is True
    assert w.commands.resume("example.com")["routes"] == []
    with pytest.raises(KeyError):
        w.commands.pause("elsewhere.test")


def test_status_says_down_since_next_probe_and_the_oldest(w):
    env = w.queue()
    w.advance(10)
    status = done(w.commands.status())
    (target,) = [t for t in status["targets"] if t["target"] == "example.com"]
    assert target["state"] == "down" and target["down_since"] is not None
    assert "connection refused" in target["last_error"]
    assert target["next_probe"] > status["now"]
    assert target["messages"] == 1 and target["recipients"] == 1
    oldest = target["oldest"]
    assert oldest["id"] == env.id and oldest["retries_left"] == 100
    assert oldest["next_try"] == target["next_probe"]  # the probe, not in 15 minutes
    assert oldest["next_try_why"].startswith("target down")
    # the first try (1 s after arrival), then 100 retries 15 minutes apart
    assert oldest["gives_up_at"] == env.received_at + 1 + 100 * 15 * MINUTE


def test_status_says_how_far_a_load_in_the_background_is(w):
    """``queue.background``: ``queue`` counts what is read so far; ``loading`` the rest."""
    w.queue()
    assert "loading" not in done(w.commands.status())
    progress = {"loaded": 1, "of": 30_000, "failed": None}
    assert w.commands.loading() is None
    w.scheduler.load_progress = lambda: progress
    status = done(w.commands.status())
    assert status["loading"] == progress and status["queue"] == 1
    assert w.commands.loading() == progress  # what ``queue list`` asks (O(1))


def test_list_shows_retries_left_and_the_real_next_try(w):
    w.queue()
    w.advance(10)
    (m,) = done(w.commands.list())
    (r,) = m["recipients"]
    target = w.scheduler.health.targets["example.com"]
    assert r["retries_left"] == 100 and r["next_try"] == target.next_probe
    assert r["next_attempt"] > r["next_try"]  # the nominal one is later


def test_summary_buckets_by_age(w):
    w.queue()
    w.advance(30 * MINUTE)
    w.queue()
    shape = done(w.commands.summary())
    assert shape["buckets"][0] == 5
    row = shape["targets"]["example.com"]
    assert row[0] == 1 and row[3] == 1  # < 5 minutes, and 20-40 minutes
    assert shape["total"] == row


def test_show_body_is_the_stored_message(w):
    env = w.queue(body=b"Subject: x\r\n\r\n\xffbinary\r\n")
    info = w.commands.show(env.id, body=True)
    assert base64.b64decode(info["message"]) == b"Subject: x\r\n\r\n\xffbinary\r\n"


def test_list_pages_in_arrival_order_and_count(w):
    ids = [w.queue(sender=f"s{i}@sender.test").id for i in range(5)]
    ordered = sorted(ids)
    first = done(w.commands.list(limit=2))
    assert [m["id"] for m in first] == ordered[:2]
    rest = done(w.commands.list(limit=10, after=first[-1]["id"]))
    assert [m["id"] for m in rest] == ordered[2:]
    assert w.commands.count() == 5
    picked = done(w.commands.list(limit=1, sender="s3@sender.test"))
    assert [m["sender"] for m in picked] == ["s3@sender.test"]


def test_next_pages_reuse_the_listing_and_skip_messages_gone_since(w):
    ids = sorted(w.queue(sender=f"s{i}@sender.test").id for i in range(4))
    first = done(w.commands.list(limit=2))
    done(w.commands.delete(ids=[ids[2]]))
    rest = done(w.commands.list(limit=10, after=first[-1]["id"]))
    assert [m["id"] for m in rest] == [ids[3]]


def test_a_big_listing_is_made_in_turns_of_the_reactor(w, monkeypatch):
    """A listing or a bulk action over many messages chooses and sorts their ids a slice per
    turn of the reactor (here 2 ids per slice): between two slices the reactor serves
    clients, so a million queued do not stall acceptance."""
    monkeypatch.setattr(selection, "SORT_SLICE", 2)
    monkeypatch.setattr(selection, "READ_SLICE", 2)
    ids = sorted(w.queue(sender=f"s{i}@sender.test").id for i in range(5))
    listing = w.commands.list(limit=4)
    bulk = w.commands.hold(sender="s4@sender.test")
    assert not listing.called and not bulk.called  # 3 slices each: the first one done
    turns = 0
    while slices := [
        c for c in w.clock.getDelayedCalls() if getattr(c.func, "__name__", "") == "step"
    ]:
        assert slices[0].getTime() == w.clock.seconds()  # the next slice: the next turn
        w.clock.calls.remove(slices[0])
        slices[0].func()
        turns += 1
    assert turns == 4  # two turns each
    assert [m["id"] for m in done(listing)] == ids[:4]
    assert done(bulk)["held"] == 1
    # the next page reuses the listing's sorted ids: at once
    assert [m["id"] for m in done(w.commands.list(limit=4, after=ids[3]))] == ids[4:]


def test_summary_counts_in_turns_of_the_reactor(w, monkeypatch):
    monkeypatch.setattr(status, "SUMMARY_SLICE", 2)
    for _ in range(5):
        w.queue()
    shape = w.commands.summary()
    assert not shape.called  # 2 counted, 3 to go
    w.clock.advance(0)
    assert done(shape)["targets"]["example.com"][0] == 5


def test_list_after_a_number_from_a_raw_request(w):
    """A raw JSON request may send ``after`` as a number: compared as the text it is."""
    qid = w.queue().id
    assert [m["id"] for m in done(w.commands.list(after=0, all=True))] == [qid]
    assert done(w.commands.list(after=int("9" * 20), all=True)) == []


def test_a_listing_whose_client_goes_away_is_cancelled(w, monkeypatch):
    """A monitor that polls ``queue list`` with a short timeout must not pile listings of a
    million up: once the client has gone, no further slice of the reactor's time is spent."""
    from twisted.internet.testing import StringTransport

    from mxbackup.ops.control import ControlProtocol

    monkeypatch.setattr(selection, "SORT_SLICE", 2)
    for _ in range(6):
        w.queue()
    proto = ControlProtocol(w.commands)
    proto.makeConnection(StringTransport())
    proto.lineReceived(b'{"cmd": "list"}')
    assert len(slices(w)) == 1  # the first slice done, the next one waiting for its turn
    proto.connectionLost(None)
    assert slices(w) == []
    proto.lineReceived(b'{"cmd": "count"}')  # other commands answer as ever
    assert proto.transport.value().endswith(b'{"ok": true, "result": 6}\n')


def slices(w) -> list:
    """The slices of work in turns waiting for their turn (``turns.in_turns``)."""
    return [c for c in w.clock.getDelayedCalls() if getattr(c.func, "__name__", "") == "step"]


def test_status_and_stats_scan_a_big_queue_in_turns_of_the_reactor(w, monkeypatch):
    """Regression (issue 17): the oldest of 677,000 ids found at once stalled acceptance
    ~100 ms per ``stats`` or ``status``; they now look at a slice per turn."""
    monkeypatch.setattr(backlog_module, "SCAN_SLICE", 2)
    ids = [w.queue().id for _ in range(5)]
    stats, status = w.commands.stats(), w.commands.status()
    assert not stats.called and not status.called
    for _ in range(10):
        w.clock.advance(0)
    counted = done(stats)
    assert counted["queue"] == 5
    assert counted["oldest_age"] == 0.0  # all queued at this very moment of the clock
    (target,) = [t for t in done(status)["targets"] if t["target"] == "example.com"]
    assert target["oldest"]["id"] == min(ids) and target["recipients"] == 5


def test_status_shows_an_oldest_even_if_the_one_found_left_during_the_scan(w, monkeypatch):
    """During a drain the oldest message is often delivered while a big target is scanned:
    ``status`` looks again (``OLDEST_TRIES``) instead of showing none."""
    monkeypatch.setattr(backlog_module, "SCAN_SLICE", 2)
    ids = sorted(w.queue().id for _ in range(5))
    steps = status.View(w.scheduler).status_steps()
    next(steps)  # the ids copied
    next(steps)  # and the first slice looked at
    w.scheduler.backlog.forget(w.scheduler.queue[ids[0]])  # delivered meanwhile
    answer = at_once(steps)
    (target,) = [t for t in answer["targets"] if t["target"] == "example.com"]
    assert target["oldest"]["id"] == ids[1] and target["messages"] == 4


@pytest.mark.parametrize("cmd", ["status", "stats"])
def test_a_scan_whose_client_goes_away_is_cancelled(w, monkeypatch, cmd):
    from twisted.internet.testing import StringTransport

    from mxbackup.ops.control import ControlProtocol

    monkeypatch.setattr(backlog_module, "SCAN_SLICE", 2)
    for _ in range(6):
        w.queue()
    proto = ControlProtocol(w.commands)
    proto.makeConnection(StringTransport())
    proto.lineReceived(b'{"cmd": "%s"}' % cmd.encode())
    assert len(slices(w)) == 1
    proto.connectionLost(None)
    assert slices(w) == []


def test_bulk_actions_wait_for_a_queue_read_in_the_background(w):
    """Review: ``hold --route X`` while a big queue loads acted on what was read so far and
    said "held N": the messages read later were delivered.  Refused until the load ends; a
    single id not read yet says so."""
    env = w.queue()
    w.scheduler.load_progress = lambda: {"loaded": 1, "of": 30_000, "failed": None}
    for action in (w.commands.hold, w.commands.delete, w.commands.bounce, w.commands.release):
        with pytest.raises(ValueError, match="still being read .29999 more"):
            done(action(route="example.com"))
    with pytest.raises(KeyError, match="no message NOPE read yet"):
        done(w.commands.hold(id="NOPE"))
    done(w.commands.hold(id=env.id))  # one that is read: as ever
    assert w.scheduler.backlog.is_held(env.id)
    w.scheduler.load_progress = lambda: None
    assert done(w.commands.release(route="example.com"))["released"] == 1
