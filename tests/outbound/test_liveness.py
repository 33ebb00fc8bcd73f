"""Quick checks (``outbound/liveness``): with the default delivery settings, a target down at
acceptance gets its mail within seconds of coming back, at a documented cost.  Time is a
Clock; the connect-only check is the fake deliverer's ``reach`` (``outbound_world``)."""

from __future__ import annotations

import pytest
from outbound_world import MINUTE, World

from mxbackup.config.model import DeliveryConfig

HOUR = 60 * MINUTE


@pytest.fixture
def w(tmp_path):
    return World(tmp_path, default_delivery=True)


def down_at_acceptance(w: World):
    w.deliver.up = False
    env = w.queue()
    w.clock.advance(0)  # the first try: refused, the target is down
    assert w.scheduler.targets["example.com"].down
    return env


def until_delivered(w: World, limit: float, step: float = 0.25) -> float:
    """Advance the clock until the queue is empty; the seconds it took."""
    start = w.clock.seconds()
    while w.scheduler.queue:
        assert w.clock.seconds() - start <= limit, "not delivered in time"
        w.clock.advance(step)
    return w.clock.seconds() - start


def test_the_defaults_are_the_documented_ones(w):
    d = w.config.delivery
    assert (d.quick_check_interval, d.quick_check_for, d.probe_interval, d.tick) == (2, 3600, 30, 1)
    assert DeliveryConfig().quick_check_interval == 2


@pytest.mark.parametrize("back_after", [10, 5 * MINUTE, 59 * MINUTE, 59 * MINUTE + 59])
def test_first_delivery_within_5_seconds_of_the_primary_coming_back(w, back_after):
    down_at_acceptance(w)
    w.advance(back_after, step=0.5)
    assert w.scheduler.queue and w.scheduler.stats.delivered == 0
    w.deliver.up = True
    assert until_delivered(w, limit=5) <= 5
    assert w.scheduler.stats.delivered == 1


def test_after_quick_check_for_only_the_probes_run(w):
    """Measured cost of a dead target: about 1,800 checks (+120 probes) in the first hour,
    then 120 probes an hour and no check."""
    down_at_acceptance(w)
    per_hour = []
    for _ in range(3):
        checks, probes = len(w.deliver.checks), w.deliver.probes
        w.advance(HOUR)
        per_hour.append((len(w.deliver.checks) - checks, w.deliver.probes - probes))
    (checks1, probes1), (checks2, probes2), (checks3, probes3) = per_hour
    assert 1750 <= checks1 <= 1850  # 3600 / 2, jittered
    assert 119 <= probes1 <= 121  # 3600 / 30
    assert checks2 == checks3 == 0
    assert probes2 == probes3 == 120
    assert len(w.deliver.connections_with_mail) == 1  # the first try; retries: no connection
    # after the window, back to the old bound: the next probe (at most probe_interval)
    w.deliver.up = True
    assert until_delivered(w, limit=31) <= 31


def test_checks_are_jittered_around_the_interval(w):
    down_at_acceptance(w)
    w.advance(10 * MINUTE, step=0.5)
    n = len(w.deliver.checks)
    assert 270 <= n <= 330  # 600 s / 2 s
    assert {timeout for _, timeout in w.deliver.checks} == {2.0}  # min(connect_timeout, 2)


def test_a_refused_check_changes_no_recipient_state(w):
    env = down_at_acceptance(w)
    rcpt = env.recipients[0]
    before = (rcpt.state, rcpt.attempts, rcpt.next_attempt, rcpt.last_reply, rcpt.inflight)
    target = w.scheduler.targets["example.com"]
    error, since = target.last_error, target.down_since
    w.advance(25)  # before the first probe (30 s) and the next retry (15 min)
    assert len(w.deliver.checks) >= 8
    assert w.deliver.probes == 0
    assert (rcpt.state, rcpt.attempts, rcpt.next_attempt, rcpt.last_reply, rcpt.inflight) == before
    assert (target.last_error, target.down_since, target.down) == (error, since, True)
    assert w.scheduler.stats.delivered == 0


def test_at_most_one_check_or_probe_in_flight(w):
    down_at_acceptance(w)
    w.deliver.hold_checks = True
    w.advance(2 * MINUTE)
    assert len(w.deliver.checks) == 1  # still in flight: no second check...
    assert w.deliver.probes == 0  # ...and no probe beside it
    w.deliver.up = True
    w.deliver.pending_checks.pop().callback(True)  # it connected: the probe at once
    assert w.deliver.probes == 1
    w.clock.advance(0)
    assert w.scheduler.stats.delivered == 1


def test_a_probe_in_flight_holds_the_checks(w):
    down_at_acceptance(w)
    w.deliver.hold = True  # sessions and probes stay pending
    w.advance(30)  # the first probe starts at 30 s
    assert w.deliver.probes == 1
    checks = len(w.deliver.checks)
    w.advance(20)
    assert len(w.deliver.checks) == checks


def test_port_open_but_smtp_refused_costs_one_extra_probe_not_one_per_check(w):
    """The port takes connections but the session fails (a 421 for hours): the first check
    that connects probes, the next ones do not; the regular probes go on."""
    down_at_acceptance(w)
    w.deliver.port_open = True
    w.advance(5 * MINUTE)
    assert len(w.deliver.checks) >= 100
    # the check's probe (at ~2 s), then one every 30 s after it: 32, 62, ... 272
    assert w.deliver.probes == 1 + 9
    # the port closes, then opens again: that is news, a probe at once
    w.deliver.port_open = False
    w.advance(10)
    w.deliver.up = True
    w.deliver.port_open = None
    assert until_delivered(w, limit=5) <= 5


def test_quick_check_interval_0_is_the_old_behaviour(tmp_path):
    w = World(tmp_path, delivery={"quick_check_interval": 0})
    down_at_acceptance(w)
    w.advance(10 * MINUTE)
    assert w.deliver.checks == []
    assert w.deliver.probes == 20  # one every 30 s
    w.advance(7)
    w.deliver.up = True
    took = until_delivered(w, limit=31)
    assert 5 < took <= 31  # the next probe, not a check


def test_a_target_back_up_and_down_again_gets_a_new_window(w):
    down_at_acceptance(w)
    w.advance(2 * HOUR)
    assert w.deliver.checks[-1:] and len(w.deliver.checks) < 2000
    w.deliver.up = True
    until_delivered(w, limit=31)
    w.deliver.up = False
    checks = len(w.deliver.checks)
    down_at_acceptance(w)  # a new message: refused, a new outage
    w.advance(MINUTE)
    assert len(w.deliver.checks) - checks >= 25


def test_no_checks_without_mail_nor_without_an_address(w):
    w.nexthop.no_address.add("example.com")
    w.deliver.up = False
    w.queue()
    w.advance(MINUTE)
    assert w.deliver.checks == []  # nowhere to check: the fake check was never called


# -- a sign of life: an inbound connection from a down target's address ------------------------
@pytest.fixture
def slow(tmp_path):
    """Probes once an hour and no quick checks: only a sign of life can be quick."""
    return World(tmp_path, delivery={"quick_check_interval": 0, "probe_interval": 3600})


def test_a_connection_from_the_targets_address_probes_it_at_the_next_tick(slow):
    down_at_acceptance(slow)
    slow.advance(MINUTE)
    slow.deliver.up = True
    slow.scheduler.quick.seen("::ffff:127.0.0.1")  # the route's address, IPv4-mapped
    assert until_delivered(slow, limit=1) <= 1
    assert slow.deliver.probes == 1


def test_a_connection_from_elsewhere_is_no_sign_of_life(slow):
    down_at_acceptance(slow)
    slow.deliver.up = True
    slow.scheduler.quick.seen("127.0.0.9")
    slow.advance(MINUTE)
    assert slow.deliver.probes == 0 and slow.scheduler.stats.delivered == 0


def test_signs_of_life_probe_at_most_once_per_probe_interval(slow):
    down_at_acceptance(slow)
    for _ in range(100):  # a busy primary whose own port is still closed
        slow.scheduler.quick.seen("127.0.0.1")
        slow.clock.advance(1)
    assert slow.deliver.probes == 1
    slow.clock.advance(3600)  # the regular probe
    slow.scheduler.quick.seen("127.0.0.1")
    slow.clock.advance(1)
    assert slow.deliver.probes == 3


def test_no_sign_of_life_for_an_address_never_dialed(slow):
    slow.scheduler.quick.seen("127.0.0.1")  # nothing queued, nothing known
    slow.advance(2)
    assert slow.deliver.calls == []


def test_the_inbound_factory_reports_each_clients_address_and_survives_a_failing_report(
    tmp_path,
):
    from twisted.internet.address import IPv4Address

    from mxbackup.inbound.factory import SMTPFactory

    seen: list[str] = []
    w = World(tmp_path)
    factory = SMTPFactory(
        w.config, w.spool, clock=w.clock, check_password=lambda u, p: None, seen=seen.append
    )
    assert factory.buildProtocol(IPv4Address("TCP", "127.0.0.5", 40000)) is not None
    assert seen == ["127.0.0.5"]

    def broken(ip: str) -> None:
        raise RuntimeError("bug")

    factory.seen = broken
    assert factory.buildProtocol(IPv4Address("TCP", "127.0.0.5", 40001)) is not None


def test_a_thousand_dead_targets_cost_at_most_the_global_budget():
    """1,000 dead routes: at most CHECKS_PER_SECOND quick checks a second in all (each
    target then every ~20 s), instead of 500 a second."""
    import random

    from twisted.internet import defer

    from mxbackup.outbound.health import Health
    from mxbackup.outbound.liveness import CHECKS_PER_SECOND, QuickChecks

    health = Health()
    for i in range(1000):
        health.get(f"r{i}.test").went_down("refused", now=1.0, probe_interval=30)
    calls: list[str] = []

    class Dialer:
        targets_at: dict = {}

        def reach(self, key, timeout):
            calls.append(key)
            return defer.succeed(False)

    checks = QuickChecks(Dialer(), health, probe=lambda t: None, rng=random.Random(14))
    checks.reconfigure(DeliveryConfig())
    for second in range(600):
        checks.run(1.0 + second, has_mail=lambda key: True)
    first_round = 1000  # every target's first check falls in its first jittered interval
    assert len(calls) <= CHECKS_PER_SECOND * 600 * 1.1 + first_round
    assert len(set(calls)) == 1000  # nobody starved


def test_down_targets_without_mail_do_not_take_the_budget():
    """Regression (review): every down target counted in the budget's share, so a thousand
    dead bounce domains with nothing queued stretched the primary's checks from 2 s to 20 s."""
    import random

    from twisted.internet import defer

    from mxbackup.outbound.health import Health
    from mxbackup.outbound.liveness import QuickChecks

    health = Health()
    for i in range(1000):
        health.get(f"mx:dead{i}.test").went_down("refused", now=1.0, probe_interval=30)
    health.get("example.com").went_down("refused", now=1.0, probe_interval=30)
    calls: list[str] = []

    class Dialer:
        targets_at: dict = {}

        def reach(self, key, timeout):
            calls.append(key)
            return defer.succeed(False)

    checks = QuickChecks(Dialer(), health, probe=lambda t: None, rng=random.Random(14))
    checks.reconfigure(DeliveryConfig())
    for second in range(60):
        checks.run(1.0 + second, has_mail=lambda key: key == "example.com")
    assert set(calls) == {"example.com"}
    assert 24 <= len(calls) <= 36  # every 2 s (+-25 %), not every 20 s
