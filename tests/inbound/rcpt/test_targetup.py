"""Link: accept_when_target_up (450 4.7.1 while the target is known up)."""

from __future__ import annotations

from pathlib import Path

from rcpt_case import candidate, transaction

from helpers import base_config
from mxbackup import config as config_module
from mxbackup.inbound.rcpt.decision import ACCEPT
from mxbackup.inbound.rcpt.targetup import TargetUpLink
from mxbackup.routes import RouteTable
from mxbackup.stats import Stats


class View:
    up: bool | None = None

    def is_up(self, route):
        return self.up


def routes():
    data = base_config(Path("/nonexistent"))
    data["routes"] = [
        {"domain": "example.com", "target_host": "127.0.0.1", "accept_when_target_up": False},
        {"domain": "other.test", "target_host": "127.0.0.1"},
    ]
    return RouteTable(config_module.parse(data, "t.yaml").routes)


def test_up_refuses_down_and_unknown_accept():
    view, stats, table = View(), Stats(), routes()
    link = TargetUpLink(view, stats)
    rcpt = candidate("u@example.com", table)
    assert link.decide(transaction(), rcpt) is ACCEPT  # unknown: accepted
    view.up = True
    reply = link.decide(transaction(), rcpt)
    assert (reply.code, reply.status) == (450, "4.7.1") and "example.com" in reply.text
    assert link.decide(transaction(), candidate("u@other.test", table)) is ACCEPT  # default true
    view.up = False
    assert link.decide(transaction(), rcpt) is ACCEPT
    assert stats.refusals["target_up"] == 1
