"""Target health: up, down, probes, slow start; pure."""

from __future__ import annotations

from mxbackup.outbound.health import Health, Target, target_key
from mxbackup.queue.envelope import Recipient


def test_target_key_is_the_route_or_the_domain_for_mx_delivery():
    assert target_key(Recipient("u@example.com", "*.example.com")) == "*.example.com"
    assert target_key(Recipient("u@Sender.Test", None)) == "mx:sender.test"


def test_slow_start_until_proven():
    t = Target("example.com")
    assert not t.down and t.limit(5) == 1
    assert t.went_up() is False  # it was not down
    assert t.proven and t.limit(5) == 5


def test_down_then_back():
    t = Target("example.com")
    t.went_up()
    assert t.went_down("connect: refused", now=100, probe_interval=30) is True
    assert t.down and t.down_since == 100 and not t.proven and t.limit(5) == 1
    assert (t.last_error, t.next_probe) == ("connect: refused", 130)
    # still down: the first failure's time stays, the error and next probe move on
    assert t.went_down("connect: timed out", now=130, probe_interval=30) is False
    assert (t.down_since, t.last_error, t.next_probe) == (100, "connect: timed out", 160)
    assert not t.probe_due(159) and t.probe_due(160)
    t.probing = True
    assert not t.probe_due(160)  # one probe at a time
    t.probing = False
    assert t.went_up() is True
    assert not t.down and t.last_error == "" and t.proven


def test_startup_probes_once_each_skipping_busy_or_down_targets():
    h = Health()
    h.get("busy").probing = True
    h.get("dead").went_down("x", 1, 30)
    h.probe_at_start(["a", "busy", "dead"])
    assert [t.key for t in h.startup_probes()] == ["a"]
    assert list(h.startup_probes()) == []


def test_due_probes_and_flush():
    h = Health()
    h.get("up")
    h.get("down").went_down("refused", now=100, probe_interval=3600)
    assert list(h.due_probes(200)) == []
    h.flushed(["up", "down", "unknown"], now=200)  # a down target is probed first
    assert [t.key for t in h.due_probes(200)] == ["down"]
    assert "unknown" not in h.targets
    assert h.is_up("up") and not h.is_up("down") and not h.is_up("unknown")
