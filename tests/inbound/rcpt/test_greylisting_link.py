"""The greylisting link in a session (a Clock, an in-memory store): 450 4.7.1 at the first
RCPT, 250 after the delay; exempt and authenticated clients skip it; counted by reason."""

from __future__ import annotations

from pathlib import Path

from twisted.internet import defer

from helpers import Harness, base_config
from mxbackup.checks.env import CheckEnv


class MemoryStore:
    def __init__(self, clock) -> None:
        self.clock = clock
        self.data: dict[tuple[str, str], tuple[bytes, float]] = {}

    def get(self, namespace, key):
        value = self.data.get((namespace, key))
        if value is None or value[1] <= self.clock.seconds():
            return defer.succeed(None)
        return defer.succeed(value[0])

    def put(self, namespace, key, value, ttl):
        self.data[(namespace, key)] = (value, self.clock.seconds() + ttl)
        return defer.succeed(None)


def harness(tmp: Path) -> Harness:
    data = base_config(tmp)
    data["ip_ranges"] = [
        {"name": "Trusted", "addresses": ["127.0.0.3/32"]},
        {"name": "Internet", "addresses": ["0.0.0.0/0", "::/0"]},
    ]
    data["checks"] = {"exempt_ranges": ["Trusted"], "greylisting": {"delay": 60}}
    h = Harness(tmp, data)
    h.factory.checks_env = CheckEnv(
        clock=h.clock, stats=h.factory.stats, store=MemoryStore(h.clock)
    )
    h.factory.reconfigure(h.config)
    return h


TXN = b"EHLO c.test\r\nMAIL FROM:<s@sender.test>\r\nRCPT TO:<u@example.com>\r\n"


def test_first_try_greylisted_retry_after_the_delay_passes(tmp_path) -> None:
    h = harness(tmp_path)
    assert h.connect("192.0.2.1").send(TXN)[-1].startswith("450 4.7.1 ")
    assert h.factory.stats.refusals["greylisting"] == 1
    h.clock.advance(61)
    assert h.connect("192.0.2.1").send(TXN)[-1].startswith("250")


def test_exempt_clients_skip_greylisting(tmp_path) -> None:
    h = harness(tmp_path)
    assert h.connect("127.0.0.3").send(TXN)[-1].startswith("250")
