"""Retry rules: intervals, backoff, the retry count and the queue lifetime."""

from __future__ import annotations

from helpers import base_config
from mxbackup import config as config_module
from mxbackup.outbound.policy import DEFAULT_LIFETIME, DEFAULT_MINUTES, DEFAULT_RETRIES, RetryRule


def test_backoff_rule():
    rule = RetryRule(
        retries=10, minutes_between_retries=1, backoff=2, max_minutes_between_retries=5
    )
    assert [rule.interval(n) / 60 for n in range(1, 6)] == [1, 2, 4, 5, 5]
    assert RetryRule(retries=2).next_attempt(3, 0, 10) is None


def test_fixed_interval_without_backoff_ignores_the_cap():
    rule = RetryRule(retries=5, minutes_between_retries=10, max_minutes_between_retries=1)
    assert [rule.interval(n) for n in (0, 1, 2, 7)] == [600.0] * 4


def test_next_attempt_counts_retries_after_the_first_try():
    rule = RetryRule(retries=2, minutes_between_retries=1, max_queue_lifetime=0)
    assert rule.next_attempt(1, 0, 100) == 160
    assert rule.next_attempt(2, 0, 100) == 160  # the last retry is still allowed
    assert rule.next_attempt(3, 0, 100) is None


def test_queue_lifetime_caps_the_next_attempt_and_ends_the_retries():
    rule = RetryRule(retries=100, minutes_between_retries=30, max_queue_lifetime=3600)
    assert rule.next_attempt(1, 1000, 1000 + 3000) == 1000 + 3600  # not beyond the lifetime
    assert rule.next_attempt(1, 1000, 1000 + 3600) is None
    assert RetryRule(retries=100, max_queue_lifetime=0).next_attempt(50, 0, 10**9) is not None


def test_rules_for_mail_without_a_route_are_postfix_like():
    rule = RetryRule.for_route(None)
    assert (rule.retries, rule.minutes_between_retries) == (DEFAULT_RETRIES, DEFAULT_MINUTES)
    assert rule.max_queue_lifetime == DEFAULT_LIFETIME == 5 * 24 * 3600


def test_rules_for_a_route(tmp_path):
    data = base_config(tmp_path)
    data["routes"][0].update(
        retries=3, minutes_between_retries=20, backoff=1.5, max_minutes_between_retries=10
    )
    route = config_module.parse(data, "test.yaml").routes[0]
    rule = RetryRule.for_route(route)
    assert (rule.retries, rule.minutes_between_retries, rule.backoff) == (3, 20, 1.5)
    # a cap below the interval would shorten it: the interval is the floor
    assert rule.max_minutes_between_retries == 20
    assert rule.max_queue_lifetime == route.max_queue_lifetime
