"""The factory: connection limits, reloads, the protocol it builds."""

from __future__ import annotations

from helpers import Harness, base_config


def test_connection_limits(tmp_path):
    data = base_config(tmp_path, max_connections=3, max_connections_per_ip=2)
    h = Harness(tmp_path, data)
    a, b = h.connect("127.0.0.9"), h.connect("127.0.0.9")
    third = h.connect("127.0.0.9")
    assert third.read() == ["421 4.7.0 Too many connections from your address, try again later"]
    other = h.connect("127.0.0.10")
    assert other.read()[0].startswith("220")
    assert h.connect("127.0.0.11").read()[0].startswith("421 4.7.0")
    a.proto.connectionLost(None)
    assert h.connect("127.0.0.9").read()[0].startswith("220")
    assert b
