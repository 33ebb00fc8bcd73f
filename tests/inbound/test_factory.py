"""The factory: connection limits, reloads, the protocol it builds."""

from __future__ import annotations

from twisted.internet.testing import StringTransport

from helpers import Harness, base_config
from mxbackup import config as config_module
from mxbackup import replies
from mxbackup.inbound.factory import Refuse, SMTPFactory
from mxbackup.inbound.server import SMTPServer


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


def test_refused_connection_says_why_and_closes():
    t = StringTransport()
    refuse = Refuse(replies.TOO_MANY_CONNECTIONS)
    refuse.makeConnection(t)
    assert t.value() == b"421 4.7.0 Too many connections, try again later\r\n"
    assert t.disconnecting


def test_builds_a_server_bound_to_it_and_counts_connections(h):
    c = h.connect()
    assert isinstance(c.proto, SMTPServer) and c.proto.factory is h.factory
    assert (h.factory.connections, dict(h.factory.per_ip)) == (1, {"127.0.0.9": 1})
    c.proto.connectionLost(None)
    c.proto.connectionLost(None)  # counted down once only
    assert (h.factory.connections, dict(h.factory.per_ip)) == (0, {})


def test_a_reload_applies_to_connected_clients(h, tmp_path):
    c = h.connect()
    c.read()
    assert c.codes(b"MAIL FROM:<s@sender.test>\r\nRCPT TO:<u@example.com>\r\n") == [250, 250]
    data = base_config(tmp_path, max_message_size=1234)
    data["routes"] = data["routes"][1:]  # example.com no longer routed
    h.factory.reconfigure(config_module.parse(data, "reloaded.yaml"))
    assert c.send(b"RCPT TO:<v@example.com>\r\n")[0].startswith("550 5.7.1 Relay access denied")
    assert "250-SIZE 1234" in c.send(b"EHLO c.test\r\n")


def test_log_prefix_is_the_class_name(h):
    """Twisted's listening port logs "SMTPFactory starting on PORT" (tests and operators wait
    for that line)."""
    assert isinstance(h.factory, SMTPFactory) and h.factory.logPrefix() == "SMTPFactory"
