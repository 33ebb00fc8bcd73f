"""The composition root: what starting the service does beyond starting its parts."""

from __future__ import annotations

import gc
import signal
from typing import Any

from mxbackup.service import MXBackupService


class StubScheduler:
    started = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False


def test_start_freezes_what_lives_as_long_as_the_server() -> None:
    """Regression: the objects alive at start-up (Twisted's, the recovered queue) are
    frozen, so the cyclic GC's full collections (a 38 ms pause, measured) skip them."""
    scheduler = StubScheduler()
    top = MXBackupService(Any, None, None, scheduler, None)  # type: ignore[arg-type]
    old_hup = signal.getsignal(signal.SIGHUP)
    gc.unfreeze()
    try:
        top.startService()
        assert scheduler.started
        assert gc.get_freeze_count() > 0
        top.stopService()
    finally:
        gc.unfreeze()
        signal.signal(signal.SIGHUP, old_hup)


class _Port:
    def getHost(self) -> Any:
        from twisted.internet.address import IPv4Address

        return IPv4Address("TCP", "127.0.0.1", 2525)


class _Endpoint:
    def listen(self, factory: Any) -> Any:
        from twisted.internet import defer

        return defer.succeed(_Port())


class _NextHop:
    def __init__(self) -> None:
        self.own: list[tuple[str, int]] = []

    def add_own(self, host: str, port: int) -> None:
        self.own.append((host, port))


def test_listening_address_is_remembered_as_our_own() -> None:
    """Regression: once a listener is bound, nexthop knows its address (so we never deliver
    to ourselves), through the endpoint's public ``listen``: no patched service methods."""
    from mxbackup.service import _OwnAddressEndpoint

    nexthop = _NextHop()
    ports: list[Any] = []
    _OwnAddressEndpoint(_Endpoint(), nexthop).listen(object()).addCallback(ports.append)  # type: ignore[arg-type]
    assert nexthop.own == [("127.0.0.1", 2525)]
    assert isinstance(ports[0], _Port)
