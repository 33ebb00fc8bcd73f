"""Dialing a target: where to connect (the next hop), with which settings, through the
injected ``deliver`` (the delivery contract, ``mxbackup.wire.contract``).

When there is nowhere to connect to, the outcome is decided here, without a client: a domain
that can never take mail (null MX, no such domain) is a permanent failure (``5.1.2``), one
without a usable address a temporary one (``4.4.4``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import defer

from mxbackup.config import Config, Route
from mxbackup.outbound.nexthop import NextHop, NoRoute
from mxbackup.wire import contract
from mxbackup.wire.contract import Attempt, Delivery, Job, JobResult, Outcome, Settings

# The connect-only check (``mxbackup.wire.reach.reachable`` with the reactor bound in):
# candidates and a connect timeout in, a Deferred firing True once one of them connected.
Check = Callable[[Sequence[contract.Candidate], float], "defer.Deferred[bool]"]

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
    def __init__(
        self,
        nexthop: NextHop,
        deliver: contract.Deliver,
        config: Config,
        check: Check | None = None,
    ) -> None:
        self.nexthop = nexthop
        self.deliver = deliver
        self.check = check
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self._route_by_key = {r.domain: r for r in config.routes}

    def candidates(self, key: str) -> defer.Deferred[list[contract.Candidate]]:
        """Where target ``key`` is: its route's hosts, or its domain's MX hosts."""
        route = self._route_by_key.get(key)
        if route is not None:
            return defer.maybeDeferred(self.nexthop.for_route, route)
        return defer.maybeDeferred(self.nexthop.for_domain, key.removeprefix("mx:"))

    @defer.inlineCallbacks
    def reach(self, key: str, timeout: float) -> Any:
        """Fires True when one of the target's addresses accepts a TCP connection (closed at
        once, no SMTP); False when none does, or there is nowhere (or nothing) to check."""
        if self.check is None:
            return False
        try:
            candidates = yield self.candidates(key)
        except NoRoute:
            return False
        if not candidates:
            return False
        connected = yield self.check(candidates, timeout)
        return bool(connected)

    @defer.inlineCallbacks
    def dial(self, key: str, jobs: Sequence[Job], ready: contract.Ready) -> Any:
        """Fires with the Delivery of ``jobs`` (none: a probe) to target ``key``."""
        route = self._route_by_key.get(key)
        try:
            candidates = yield self.candidates(key)
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
