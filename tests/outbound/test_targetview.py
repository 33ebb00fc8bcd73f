"""The scheduler's view of a route's target for the SMTP side (up / down / unknown, queue
count), and delivery teaching recipient verification what the target answered."""

from __future__ import annotations

from outbound_world import REMOTE, World

from mxbackup.outbound.targetview import SchedulerView
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
