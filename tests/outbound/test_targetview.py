"""The scheduler's view of a route's target for the SMTP side (up / down / unknown, queue
count), and delivery teaching recipient verification what the target answered."""

from __future__ import annotations

from outbound_world import REMOTE, World

from mxbackup.outbound.targetview import SchedulerView, UpWatch
from mxbackup.wire.contract import Outcome


def test_unknown_then_up_then_down_and_the_queue_count(tmp_path):
    w = World(tmp_path)
    view = SchedulerView(w.scheduler)
    route = w.config.routes[0]
    assert view.is_up(route) is None and not view.is_down(route)
    assert view.queued_messages(route) == 0
    w.deliver.hold = True
    w.queue()
    w.queue()
    assert view.queued_messages(route) == 2
    assert view.is_up(route) is None  # mail taken, no attempt finished: not known
    w.deliver.hold = False
    w.deliver.release()
    w.advance(2)
    assert view.is_up(route) is True and view.queued_messages(route) == 0
    w.deliver.up = False
    w.queue()
    w.advance(2)
    assert view.is_up(route) is False and view.is_down(route)
    assert view.queued_messages(route) == 1


def test_delivery_learns_for_verified_routes_only(tmp_path):
    w = World(tmp_path, routes={"verify_recipients": {}})
    learnt: list = []
    w.scheduler.recorder.learn = lambda route, address, positive, text: learnt.append(
        (route.domain, address, positive, text)
    )

    def outcome(rcpt):
        if rcpt.startswith("gone"):
            return Outcome("permfail", 550, "5.1.1 no such user", REMOTE, at_rcpt=True)
        if rcpt.startswith("content"):
            return Outcome("permfail", 554, "5.7.1 spam", REMOTE)  # refused at DATA
        if rcpt.startswith("later"):
            return Outcome("tempfail", 451, "4.3.0 later", REMOTE, at_rcpt=True)
        return Outcome("delivered", 250, "2.0.0 ok", REMOTE)

    w.deliver._outcome = outcome
    w.queue(
        rcpts=("ok@example.com", "gone@example.com", "content@example.com", "later@example.com")
    )
    w.advance(2)
    assert sorted(learnt) == [
        ("example.com", "gone@example.com", False, "5.1.1 no such user"),
        ("example.com", "ok@example.com", True, ""),
    ]
    learnt.clear()
    w.queue(rcpts=("x@other.test",), route="other.test")
    w.advance(2)
    assert learnt == []


def test_up_watch_probes_an_idle_up_target_of_a_target_up_route(tmp_path):
    """accept_when_target_up: false refuses mail while the target is up, so no delivery
    would notice it going down: the watch probes it every probe_interval (no flush), and a
    failed probe makes it down (mail accepted again).  Found by tests/e2e/test_verify_e2e.py:
    the killed primary stayed "up" and RCPT got 450 for the whole outage."""
    w = World(tmp_path, routes={"accept_when_target_up": False})
    view = SchedulerView(w.scheduler)
    watch = UpWatch(w.scheduler, w.clock)
    route = w.config.routes[0]
    watch.run()  # unknown: nothing to watch
    assert w.deliver.probes == 0
    w.queue()
    w.advance(2)
    assert view.is_up(route) is True
    probes = w.deliver.probes
    for _ in range(29):
        w.advance(1)
        watch.run()
    assert w.deliver.probes == probes  # fresh proof: no probe before probe_interval
    w.advance(2)
    watch.run()
    assert w.deliver.probes == probes + 1 and view.is_up(route) is True
    w.deliver.up = False
    w.advance(31)
    watch.run()
    assert view.is_down(route)  # mail is accepted again
    n = w.deliver.probes
    w.advance(120)
    watch.run()
    assert w.deliver.probes == n  # down, no mail: the watch leaves it to the scheduler


def test_up_watch_ignores_other_routes_and_does_not_flush(tmp_path):
    w = World(tmp_path)  # accept_when_target_up: true (the default)
    watch = UpWatch(w.scheduler, w.clock)
    w.queue()
    w.advance(2)
    n = w.deliver.probes
    w.advance(100)
    watch.run()
    w.advance(100)
    watch.run()
    assert w.deliver.probes == n
    # the probe itself does not flush an up target's queue (retry intervals stand)
    w.deliver._outcome = lambda rcpt: Outcome("tempfail", 452, "4.2.2 mailbox full", REMOTE)
    env = w.queue()
    w.advance(2)
    attempts = len(w.deliver.connections_with_mail)
    for _ in range(5):
        w.scheduler.probe("example.com")
        w.advance(1)
    assert len(w.deliver.connections_with_mail) == attempts, env.id


def test_a_refused_rcpt_has_the_up_target_checked_within_quick_check_interval(tmp_path):
    """probe_interval is long; RCPTs refused because the target is up (is_up asked) have it
    probed at most every quick_check_interval: an outage is known at the sender's retry."""
    w = World(
        tmp_path,
        routes={"accept_when_target_up": False},
        delivery={"probe_interval": 3600, "quick_check_interval": 2},
    )
    watch = UpWatch(w.scheduler, w.clock)
    view = SchedulerView(w.scheduler, watch)
    route = w.config.routes[0]
    w.queue()
    w.advance(2)
    assert view.is_up(route) is True  # first asked: the proof counts as fresh
    probes = w.deliver.probes
    assert view.is_up(route) is True
    assert w.deliver.probes == probes  # not within 2 s
    w.advance(2)
    w.deliver.up = False
    assert view.is_up(route) is True  # this RCPT still gets 450; the probe starts
    assert w.deliver.probes == probes + 1
    w.advance(1)
    assert view.is_up(route) is False  # the next one is accepted
