"""Link: max_queued_messages (452 4.3.1), per route."""

from __future__ import annotations

from pathlib import Path

from rcpt_case import candidate, transaction

from helpers import base_config
from mxbackup import config as config_module
from mxbackup.inbound.rcpt.decision import ACCEPT
from mxbackup.inbound.rcpt.quota import QuotaLink
from mxbackup.routes import RouteTable
from mxbackup.stats import Stats


class View:
    def __init__(self):
        self.queued = {}

    def queued_messages(self, route):
        return self.queued.get(route.domain, 0)


def test_quota_per_route():
    data = base_config(Path("/nonexistent"))
    data["routes"] = [
        {"domain": "example.com", "target_host": "127.0.0.1", "max_queued_messages": 3},
        {"domain": "other.test", "target_host": "127.0.0.1"},
    ]
    table = RouteTable(config_module.parse(data, "t.yaml").routes)
    view, stats = View(), Stats()
    link = QuotaLink(view, stats)
    view.queued = {"example.com": 2, "other.test": 10_000}
    assert link.decide(transaction(), candidate("u@example.com", table)) is ACCEPT
    view.queued["example.com"] = 3
    reply = link.decide(transaction(), candidate("u@example.com", table))
    assert (reply.code, reply.status) == (452, "4.3.1")
    assert link.decide(transaction(), candidate("u@other.test", table)) is ACCEPT  # 0: none
    assert link.decide(transaction(), candidate("u@relayed.test", table)) is ACCEPT
    assert stats.refusals["route_quota"] == 1
