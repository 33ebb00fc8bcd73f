"""Dialing a target: where to connect (the next hop), with which settings, through the
injected ``deliver`` (the delivery contract, ``mxbackup.wire.contract``).

When there is nowhere to connect to, the outcome is decided here, without a client: a domain
that can never take mail (null MX, no such domain) is a permanent failure (``5.1.2``), one
without a usable address a temporary one (``4.4.4``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import defer

from mxbackup.config import Config, Route
from mxbackup.outbound.nexthop import NextHop, NoRoute
from mxbackup.wire import contract
from mxbackup.wire.contract import Attempt, Delivery, Job, JobResult, Outcome, Settings

NO_ADDRESS = "no address to connect to (or only our own)"


def no_wait() -> defer.Deferred[None]:
    """The ``ready`` of a probe: it has no jobs, so nothing to wait for."""
    return defer.succeed(None)


def decided(jobs: Sequence[Job], outcome: Outcome, attempt: Attempt) -> Delivery:
    """A delivery decided without a client: every recipient gets ``outcome``."""
    results = tuple(
        defer.succeed(JobResult(job, dict.fromkeys(job.recipients, outcome))) for job in jobs
    )
    return Delivery(results, defer.succeed(attempt))


class Dialer:
    def __init__(self, nexthop: NextHop, deliver: contract.Deliver, config: Config) -> None:
        self.nexthop = nexthop
        self.deliver = deliver
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self._route_by_key = {r.domain: r for r in config.routes}

    @defer.inlineCallbacks
    def dial(self, key: str, jobs: Sequence[Job], ready: contract.Ready) -> Any:
        """Fires with the Delivery of ``jobs`` (none: a probe) to target ``key``."""
        route = self._route_by_key.get(key)
        try:
            if route is not None:
                candidates = yield self.nexthop.for_route(route)
            else:
                candidates = yield self.nexthop.for_domain(key.removeprefix("mx:"))
        except NoRoute as e:
            return decided(jobs, Outcome("permfail", 0, f"5.1.2 {e}"), Attempt(True, "", str(e)))
        if not candidates:
            why = NO_ADDRESS
            return decided(jobs, Outcome("tempfail", 0, f"4.4.4 {why}"), Attempt(False, "", why))
        return self.deliver(candidates, self.settings(route), jobs, ready)

    def settings(self, route: Route | None) -> Settings:
        d = self.config.delivery
        return Settings.for_route(
            route,
            d.helo_name or self.config.server.hostname,
            connect_timeout=d.connect_timeout,
            reply_timeout=d.reply_timeout,
        )
