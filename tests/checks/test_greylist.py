"""Greylisting on the real SQLite state store and a Clock: first try refused, a retry before
the delay refused, after it passed and remembered, a retry after the window starts again;
/24 and /64 count as one client; a store that cannot answer never refuses."""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.task import Clock

from mxbackup.checks.greylist import Greylist, client_network
from mxbackup.config.checks import GreylistingConfig
from mxbackup.state import StoreUnavailable
from mxbackup.state.sqlite import SQLiteStore

CONFIG = GreylistingConfig(delay=300, retry_window=3600, pass_ttl=86400)


def answer(d: defer.Deferred) -> bool:
    out: list[bool] = []
    d.addCallback(out.append)
    assert out, "the store answered asynchronously"
    return out[0]


def test_client_networks() -> None:
    assert client_network("192.0.2.77") == "192.0.2.0/24"
    assert client_network("::ffff:192.0.2.77") == "192.0.2.0/24"
    assert client_network("2001:db8:1:2:3::9") == "2001:db8:1:2::/64"


def test_a_triplet_passes_after_the_delay_within_the_window(tmp_path) -> None:
    clock = Clock()
    clock.advance(1000)
    store = SQLiteStore(str(tmp_path / "state.sqlite"), clock)
    counted: list[str] = []
    grey = Greylist(CONFIG, store, clock.seconds, counted.append)
    assert not answer(grey.passes("192.0.2.1", "a@s.test", "u@example.com"))
    clock.advance(100)
    assert not answer(grey.passes("192.0.2.9", "A@s.test", "u@example.com"))  # same /24
    assert answer(grey.passes("192.0.2.1", "a@s.test", "other@example.com")) is False
    clock.advance(201)
    assert answer(grey.passes("192.0.2.1", "a@s.test", "u@example.com"))
    clock.advance(80000)
    assert answer(grey.passes("192.0.2.1", "a@s.test", "u@example.com"))  # remembered
    assert counted == ["new", "early", "new", "passed", "known"]
    clock.advance(300 + 3600 + 1)  # the other triplet's window has ended: new again
    assert not answer(grey.passes("192.0.2.1", "a@s.test", "other@example.com"))
    store.close()


class BrokenStore:
    def get(self, namespace, key):
        return defer.fail(StoreUnavailable("redis down"))

    def put(self, namespace, key, value, ttl):
        return defer.fail(StoreUnavailable("redis down"))


def test_store_unavailable_never_refuses() -> None:
    counted: list[str] = []
    grey = Greylist(CONFIG, BrokenStore(), Clock().seconds, counted.append)
    assert answer(grey.passes("192.0.2.1", "a@s.test", "u@example.com"))
    assert counted == ["error"]
