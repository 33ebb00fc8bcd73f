"""Why mail waits: each failure's reason, kept per target (health), paced in the log, counted
by kind, and shown with the waiting recipients (queue list) even when only a probe failed."""

from __future__ import annotations

import pytest
from outbound_world import MINUTE, World
from twisted.logger import globalLogPublisher

from mxbackup.ops.control import describe
from mxbackup.ops.status import View
from mxbackup.outbound.reasons import LOG_AGAIN, Reasons, kind_of

TLS = (
    "primary.test[127.0.0.1]:25: starttls: TLS certificate verification failed: unable to get "
    "local issuer certificate (certificate: subject CN=primary.test, issuer CN=other CA)"
)


@pytest.mark.parametrize(
    "reason, kind",
    [
        (TLS, "tls_certificate"),
        ("[::1]:25: starttls: TLS certificate not valid for the target's name (x)", "tls_hostname"),
        ("[::1]:25: starttls: TLS handshake failed: sslv3 alert", "tls"),
        ("auth: 535 5.7.8 authentication credentials invalid", "auth"),
        ("[127.0.0.1]:25: connect: ConnectionRefusedError: Connection refused", "refused"),
        ("[127.0.0.1]:25: connect: timed out", "timeout"),
        ("greeting: 421 4.3.2 busy", "reply"),
        ("4.4.6 mail for example.com loops back to myself", "loop"),
        ("4.4.3 DNS lookup of the MX hosts of example.com failed: timeout", "dns"),
        ("no address to connect to (or only our own)", "no_address"),
        ("something else", "other"),
    ],
)
def test_kind_of(reason, kind):
    assert kind_of(reason) == kind


def test_a_reason_is_logged_when_it_changes_then_every_few_minutes():
    r = Reasons()
    assert r.failed("t", "connect: refused", 0.0)
    assert not r.failed("t", "connect: refused", 30.0)
    assert r.failed("t", TLS, 60.0)  # a new reason: at once
    assert not r.failed("t", TLS, 60.0 + LOG_AGAIN - 1)
    assert r.failed("t", TLS, 60.0 + LOG_AGAIN)  # persists: again after a few minutes
    assert r.failed("other", TLS, 61.0)  # per target
    r.cleared("t")
    assert r.failed("t", TLS, 400.0)  # down again after it worked: news
    assert r.failures[("t", "tls_certificate")] == 4 and r.failures[("t", "refused")] == 2


def test_a_failed_probe_updates_the_reason_shown_for_waiting_mail(tmp_path):
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        w = World(tmp_path)
        w.deliver.up = False
        env = w.queue()
        w.advance(5)
        health = w.scheduler.health
        assert health.reason("example.com") == "connect: connection refused"
        down_since = health.down_since("example.com")
        assert down_since is not None
        # the primary comes up with a certificate from another CA: the probes fail otherwise
        w.deliver.down_reason = TLS
        w.advance(10 * MINUTE)
        assert health.reason("example.com") == TLS
        assert health.down_since("example.com") == down_since  # the same outage
        listed = describe(env, w.clock.seconds(), View(w.scheduler))["recipients"][0]
        assert listed["target_reason"] == TLS
        assert "refused" in listed["last_reply"]  # no envelope write per probe
        lines = [
            e["error"] for e in events if e.get("log_format", "").startswith("target {key} is down")
        ]
        # once per change of reason, then every LOG_AGAIN: not once per probe (20 of them)
        assert lines[0] == "connect: connection refused"
        assert lines[1:] == [TLS] * len(lines[1:])
        assert 2 <= len(lines[1:]) <= 1 + int(10 * MINUTE / LOG_AGAIN)
        assert w.deliver.probes >= 15
        w.deliver.up = True
        w.advance(31)
        assert health.reason("example.com") == "" and health.down_since("example.com") is None
        assert w.scheduler.stats.delivered == 1
    finally:
        globalLogPublisher.removeObserver(events.append)


def test_with_address():
    from mxbackup.outbound.reasons import with_address

    assert with_address("p[1.2.3.4]:25", "auth: 535 no") == "p[1.2.3.4]:25: auth: 535 no"
    assert with_address("p[1.2.3.4]:25", "p[1.2.3.4]:25: connect: x") == "p[1.2.3.4]:25: connect: x"
    assert with_address("", "connect: x") == "connect: x"
