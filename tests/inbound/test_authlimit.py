"""Failed AUTH per client across connections, on an injected Clock."""

from __future__ import annotations

from twisted.internet.task import Clock

from mxbackup.inbound.authlimit import AuthFailures, client_key


def test_blocked_after_the_limit_until_the_oldest_failure_leaves_the_window() -> None:
    clock = Clock()
    f = AuthFailures(clock, limit=3, window=60)
    for _ in range(2):
        f.failed("192.0.2.1")
        clock.advance(10)
    assert not f.blocked("192.0.2.1")
    f.failed("192.0.2.1")  # the third, at t=20
    assert f.blocked("192.0.2.1") and not f.blocked("192.0.2.2")
    clock.advance(39)  # t=59: the first (t=0) is still inside the window
    assert f.blocked("192.0.2.1")
    clock.advance(1)  # t=60
    assert not f.blocked("192.0.2.1")


def test_ipv6_clients_count_per_64_and_mapped_ipv4_as_ipv4() -> None:
    assert client_key("2001:db8:1:2:aaaa::1") == client_key("2001:db8:1:2:bbbb::2")
    assert client_key("2001:db8:1:3::1") != client_key("2001:db8:1:2::1")
    assert client_key("::ffff:192.0.2.7") == "192.0.2.7"
    f = AuthFailures(Clock(), limit=2, window=60)
    f.failed("2001:db8::1")
    f.failed("2001:db8::2")
    assert f.blocked("2001:db8::ffff")


def test_memory_is_bounded() -> None:
    f = AuthFailures(Clock(), limit=2, window=60, max_clients=100)
    for i in range(1000):
        f.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(f.failures) == 100
    assert all(len(times) <= 2 for times in f.failures.values())


def test_expired_entries_are_forgotten_and_zero_means_no_limit() -> None:
    clock = Clock()
    f = AuthFailures(clock, limit=2, window=60)
    f.failed("192.0.2.1")
    clock.advance(61)
    assert not f.blocked("192.0.2.1") and f.failures == {}
    off = AuthFailures(clock, limit=0, window=60)
    for _ in range(100):
        off.failed("192.0.2.1")
    assert not off.blocked("192.0.2.1") and off.failures == {}
