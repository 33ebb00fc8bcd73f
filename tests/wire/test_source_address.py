"""delivery.source_address: outbound connections (deliveries, probes, quick checks) come
from it; checked on real loopback sockets (127.0.0.2 is ours on Linux)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import TestCase

from helpers import base_config
from mxbackup import config as config_module
from mxbackup.config import ConfigError
from mxbackup.preflight import preflight
from mxbackup.wire import client, reach
from mxbackup.wire.contract import Candidate, Settings, bind_address


def test_bind_address_only_for_the_same_family():
    assert bind_address("", "127.0.0.1") is None
    assert bind_address("192.0.2.1", "127.0.0.1") == ("192.0.2.1", 0)
    assert bind_address("192.0.2.1", "::1") is None
    assert bind_address("2001:db8::1", "::1") == ("2001:db8::1", 0)


def parse(tmp_path, value):
    data = base_config(tmp_path)
    data["delivery"] = {"source_address": value}
    return config_module.parse(data, "t.yaml")


def test_config_takes_an_ip_address_only(tmp_path):
    assert parse(tmp_path, "127.0.0.2").delivery.source_address == "127.0.0.2"
    assert parse(tmp_path, "[::1]").delivery.source_address == "::1"
    assert parse(tmp_path, "").delivery.source_address == ""
    try:
        parse(tmp_path, "mx.example.net")
    except ConfigError as e:
        assert "delivery.source_address: must be an IPv4 or IPv6 address" in e.errors[0]
    else:
        raise AssertionError("a host name was accepted")


def test_preflight_warns_of_an_address_this_host_lacks(tmp_path):
    assert preflight(parse(tmp_path, "127.0.0.2")).warnings == []
    (warning,) = preflight(parse(tmp_path, "192.0.2.77")).warnings
    assert "delivery.source_address: 192.0.2.77 is not an address of this host" in warning


class _Peers(protocol.Factory):
    def __init__(self) -> None:
        self.peers: list[str] = []

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        self.peers.append(addr.host)
        p = protocol.Protocol()
        p.connectionMade = lambda: p.transport.loseConnection()  # type: ignore[method-assign]
        return p


class SourceAddressTests(TestCase):
    def setUp(self) -> None:
        self.factory = _Peers()
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        self.addCleanup(self.port.stopListening)
        self.candidate = Candidate("primary.test", "127.0.0.1", self.port.getHost().port)

    @defer.inlineCallbacks
    def test_quick_check_comes_from_it(self) -> Any:
        ok = yield reach.reachable(reactor, [self.candidate], 5, "127.0.0.2")
        self.assertTrue(ok)
        self.assertEqual(self.factory.peers, ["127.0.0.2"])

    @defer.inlineCallbacks
    def test_delivery_and_probe_come_from_it(self) -> Any:
        settings = Settings(
            "mx2.test", connect_timeout=5, reply_timeout=5, source_address="127.0.0.2"
        )
        delivery = client.deliver(
            reactor, [self.candidate], settings, [], lambda: defer.succeed(None)
        )
        yield delivery.done  # no SMTP there: the probe fails, but it connected from 127.0.0.2
        self.assertEqual(self.factory.peers, ["127.0.0.2"])
