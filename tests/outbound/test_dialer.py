"""Dialing: next hop, settings and the injected deliver; no route, no address."""

from __future__ import annotations

import pytest
from outbound_world import FakeNextHop, World
from twisted.internet import defer

from helpers import base_config
from mxbackup import config as config_module
from mxbackup.outbound.dialer import Dialer, no_wait
from mxbackup.wire.contract import Attempt, Delivery, Job


def config(tmp_path, **delivery):
    data = base_config(tmp_path)
    data["delivery"] = delivery
    data["routes"][0].update(security="starttls_required")
    return config_module.parse(data, "test.yaml")


JOBS = [Job("Q1", "s@sender.test", ("a@example.com", "b@example.com"), "/spool/new/Q1", 10)]


def fired(d: defer.Deferred):
    got: list = []
    d.addBoth(got.append)
    (result,) = got
    return result


class Recording:
    def __init__(self) -> None:
        self.calls: list = []

    def __call__(self, candidates, settings, jobs, ready) -> Delivery:
        self.calls.append((candidates, settings, jobs, ready))
        return Delivery((), defer.succeed(Attempt(True, "x")))


def test_route_delivery_gets_the_route_settings_and_the_ready(tmp_path):
    deliver = Recording()
    dialer = Dialer(FakeNextHop(), deliver, config(tmp_path, helo_name="out.test", reply_timeout=9))
    delivery = fired(dialer.dial("example.com", JOBS, no_wait))
    assert isinstance(delivery, Delivery)
    ((candidates, settings, jobs, ready),) = deliver.calls
    assert [c.ip for c in candidates] == ["127.0.0.1"] and jobs == JOBS and ready is no_wait
    assert (settings.helo_name, settings.security, settings.reply_timeout) == (
        "out.test",
        "starttls_required",
        9,
    )


def test_mx_delivery_is_opportunistic_and_says_our_hostname(tmp_path):
    deliver = Recording()
    fired(Dialer(FakeNextHop(), deliver, config(tmp_path)).dial("mx:sender.test", [], no_wait))
    ((candidates, settings, _, _),) = deliver.calls
    assert candidates[0].name == "mx.sender.test"
    assert (settings.helo_name, settings.security, settings.verify_certificate) == (
        "mx2.example.net",
        "starttls",
        False,
    )


def outcomes(delivery: Delivery) -> list:
    return [fired(d).outcomes for d in delivery.results]


def test_no_route_is_a_permanent_failure_decided_without_a_client(tmp_path):
    nexthop, deliver = FakeNextHop(), Recording()
    nexthop.no_route.add("sender.test")
    delivery = fired(
        Dialer(nexthop, deliver, config(tmp_path)).dial("mx:sender.test", JOBS, no_wait)
    )
    assert deliver.calls == []
    ((a, b),) = [list(o.values()) for o in outcomes(delivery)]
    assert a == b and (a.kind, a.code) == ("permfail", 0)
    assert a.text == "5.1.2 domain sender.test accepts no mail (null MX)"
    assert fired(delivery.done) == Attempt(True, "", "domain sender.test accepts no mail (null MX)")


def test_no_address_is_a_temporary_failure_and_the_target_counts_as_down(tmp_path):
    nexthop, deliver = FakeNextHop(), Recording()
    nexthop.no_address.add("example.com")
    delivery = fired(Dialer(nexthop, deliver, config(tmp_path)).dial("example.com", JOBS, no_wait))
    assert deliver.calls == []
    (per_rcpt,) = outcomes(delivery)
    assert {o.reply for o in per_rcpt.values()} == {
        "4.4.4 no address to connect to (or only our own)"
    }
    assert all(o.kind == "tempfail" and o.tried for o in per_rcpt.values())
    assert fired(delivery.done).connected is False
    assert fired(no_wait()) is None


def test_reach_checks_the_targets_addresses_and_nothing_else(tmp_path):
    nexthop, deliver, checks = FakeNextHop(), Recording(), []

    def check(candidates, timeout, source=""):
        checks.append(([(c.ip, c.port) for c in candidates], timeout))
        return defer.succeed(True)

    dialer = Dialer(nexthop, deliver, config(tmp_path), check)
    assert fired(dialer.reach("example.com", 2.0)) is True
    assert checks == [([("127.0.0.1", 9)], 2.0)]
    nexthop.no_address.add("example.com")
    nexthop.no_route.add("sender.test")
    assert fired(dialer.reach("example.com", 2.0)) is False  # nowhere to check
    assert fired(dialer.reach("mx:sender.test", 2.0)) is False
    assert len(checks) == 1 and deliver.calls == []
    assert fired(Dialer(FakeNextHop(), deliver, config(tmp_path)).reach("example.com", 2)) is False


# -- through the scheduler -----------------------------------------------------------------------
@pytest.fixture
def w(tmp_path):
    return World(tmp_path)


def test_a_domain_that_takes_no_mail_bounces_without_a_connection(w):
    w.nexthop.no_route.add("nomail.test")
    env = w.queue(rcpts=("u@nomail.test",), route=None)
    w.advance(1)
    sent = [job.qid for jobs in w.deliver.connections_with_mail for job in jobs]
    assert env.id not in sent and len(sent) == 1  # only the DSN went out
    assert env.recipients[0].state == "failed"
    (dsn,) = w.dsns()
    block = dsn.get_payload()[1].get_payload()[1]
    assert (block["Status"], block["Action"]) == ("5.1.2", "failed")
    assert (
        block["Diagnostic-Code"] == "X-mxbackup; 5.1.2 domain nomail.test accepts no mail (null MX)"
    )


def test_a_target_without_an_address_is_down_and_the_try_counts(w):
    w.nexthop.no_address.add("example.com")
    env = w.queue()
    w.advance(1)
    assert w.deliver.calls == []
    rcpt = env.recipients[0]
    assert (rcpt.state, rcpt.attempts) == ("pending", 1)
    assert rcpt.last_reply == "4.4.4 no address to connect to (or only our own)"
    assert w.scheduler.targets["example.com"].down


def test_route_targets_are_indexed_by_address_mx_targets_are_not(tmp_path):
    nexthop = FakeNextHop()
    dialer = Dialer(nexthop, Recording(), config(tmp_path))
    fired(dialer.dial("example.com", JOBS, no_wait))
    fired(dialer.dial("mx:sender.test", JOBS, no_wait))  # 127.0.0.2: a bounce's MX host
    assert dict(dialer.targets_at) == {"127.0.0.1": {"example.com"}}
    nexthop.no_address.add("example.com")  # the route's name no longer resolves
    fired(dialer.dial("example.com", JOBS, no_wait))
    assert dict(dialer.targets_at) == {} and dialer.addresses == {"example.com": frozenset()}
