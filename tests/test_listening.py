"""Listeners that say how binding went (mxbackup.listening)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, error
from twisted.internet.address import IPv4Address

from mxbackup.listening import Listener, all_settled


class Port:
    def getHost(self) -> Any:
        return IPv4Address("TCP", "127.0.0.1", 2525)


class Endpoint:
    def __init__(self, fails: bool = False) -> None:
        self.fails = fails

    def listen(self, factory: Any) -> defer.Deferred[Any]:
        if self.fails:
            return defer.fail(error.CannotListenError("127.0.0.1", 2525, OSError(98, "in use")))
        return defer.succeed(Port())


def test_a_bound_listener_passes_its_port_on():
    """Regression: the SMTP address is our own (nexthop never delivers there), learnt
    through the endpoint's public ``listen``: no patched service, no Twisted privates."""
    seen: list[Any] = []
    listener = Listener(Endpoint(), "server.listen[0]", on_bound=seen.append)
    ports: list[Any] = []
    listener.listen(object()).addCallback(ports.append)
    assert isinstance(ports[0], Port) and seen == ports
    assert listener.error == ""


def test_a_listener_that_cannot_bind_keeps_the_reason_and_still_fails():
    listener = Listener(Endpoint(fails=True), "server.listen[0]")
    failures: list[Any] = []
    listener.listen(object()).addErrback(failures.append)
    assert failures and failures[0].check(error.CannotListenError)  # the service hears it
    assert "Couldn't listen on 127.0.0.1:2525" in listener.error


def test_all_settled_names_the_failed_ones_once_every_one_tried():
    good, bad = Listener(Endpoint(), "a"), Listener(Endpoint(fails=True), "b")
    result: list[Any] = []
    all_settled([good, bad]).addCallback(result.append)
    assert result == []  # neither has tried yet
    good.listen(object())
    bad.listen(object()).addErrback(lambda f: None)
    assert result == [[bad]]
