"""``use_mx`` routes in the scheduler: when the MX hosts lead back to us (or DNS fails), the
mail waits with the reason visible, and goes out once the records change."""

from __future__ import annotations

from outbound_world import MINUTE, World

from mxbackup.ops.control import describe
from mxbackup.ops.status import View

LOOP = "4.4.6 mail for example.com loops back to myself"


def test_mail_that_loops_back_to_myself_waits_with_the_reason(tmp_path):
    w = World(tmp_path, routes={"use_mx": True})
    w.nexthop.not_now["example.com"] = LOOP
    env = w.queue()
    w.advance(5)
    assert w.deliver.calls == []  # never delivered to ourselves (nor anywhere)
    rcpt = env.recipients[0]
    assert rcpt.state == "pending" and rcpt.last_reply == LOOP
    assert w.scheduler.health.reason("example.com") == LOOP
    assert (
        describe(env, w.clock.seconds(), View(w.scheduler))["recipients"][0]["target_reason"]
        == LOOP
    )
    # the records change (a primary is more preferred than we are again): the next probe
    # finds it, and the mail goes out
    del w.nexthop.not_now["example.com"]
    w.advance(2 * MINUTE)
    assert w.scheduler.stats.delivered == 1
    assert w.scheduler.health.reason("example.com") == ""


def test_a_dns_failure_is_temporary_with_the_reason(tmp_path):
    why = "4.4.3 DNS lookup of the MX hosts of example.com failed: DNSServerError"
    w = World(tmp_path, routes={"use_mx": True})
    w.nexthop.not_now["example.com"] = why
    env = w.queue()
    w.advance(5)
    assert env.recipients[0].state == "pending"
    assert w.scheduler.health.reason("example.com") == why
    assert w.scheduler.stats.bounced == 0


def test_the_resolved_targets_are_in_the_health_view(tmp_path):
    w = World(tmp_path, routes={"use_mx": True})
    w.queue()
    w.advance(5)
    assert w.scheduler.health.addresses("example.com") == {"127.0.0.1"}
