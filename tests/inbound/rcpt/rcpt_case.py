"""What the RCPT link tests share: a transaction, a candidate, a configuration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from helpers import base_config
from mxbackup import config as config_module
from mxbackup.inbound.address import Mailbox, parse_path
from mxbackup.inbound.rcpt.decision import ACCEPT, Candidate
from mxbackup.inbound.transaction import Transaction
from mxbackup.routes import RouteTable

CONFIG = config_module.parse(base_config(Path("/nonexistent")), "test.yaml")
ROUTES = RouteTable(CONFIG.routes)


def transaction(
    client_ip: str = "192.0.2.1",
    sender: str | None = "s@sender.test",
    authenticated: bool = False,
    recipients: int = 0,
) -> Transaction:
    mailbox = None if sender is None else parse_path(f"<{sender}>", allow_null=False)
    txn = Transaction(client_ip, "c.test", authenticated, mailbox, {})
    for i in range(recipients):
        txn.add(candidate(f"u{i}@example.com").outcome(ACCEPT))
    return txn


def candidate(address: str, routes: RouteTable = ROUTES) -> Candidate:
    mailbox = parse_path(f"<{address}>", allow_null=False)
    assert isinstance(mailbox, Mailbox)
    return Candidate(mailbox, routes.lookup(mailbox.domain))


def config(**server: Any) -> config_module.Config:
    return config_module.parse(base_config(Path("/nonexistent"), **server), "test.yaml")
