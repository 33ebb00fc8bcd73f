"""The ``Policy``: what the server needs from the configuration, prepared once (and replaced on
reload).  Below the server and the factory: both read it, it knows neither."""

from __future__ import annotations

from mxbackup.checks.env import CheckEnv
from mxbackup.config import Config
from mxbackup.inbound.access import AccessMatrix
from mxbackup.inbound.checking import Checks
from mxbackup.inbound.rcpt.chain import build_chain
from mxbackup.inbound.rcpt.services import RcptServices
from mxbackup.routes import table_for as route_table


class Policy:
    """What the server needs from the configuration, prepared once (and replaced on reload)."""

    def __init__(
        self, config: Config, services: RcptServices | None = None, env: CheckEnv | None = None
    ) -> None:
        self.config = config
        self.server = config.server
        self.routes = route_table(config)
        self.access = AccessMatrix(config.ip_ranges)
        self.accounts = {a.username: a.password_hash for a in config.accounts}
        self.checks = Checks(config, env or CheckEnv(), self.access)
        self.rcpt_chain = build_chain(config, self.routes, self.access, services, self.checks)
