"""Dialing a target: where to connect (the next hop), with which settings, through the
injected ``deliver`` (the delivery contract, ``mxbackup.wire.contract``).

When there is nowhere to connect to, the outcome is decided here, without a client: a domain
that can never take mail (null MX, no such domain) is a permanent failure (``5.1.2``), one
without a usable address a temporary one (``4.4.4``).
"""

from __future__ import annotations

import ipaddress
from collections import defaultdict
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from twisted.internet import defer

from mxbackup.config import Config, Route
from mxbackup.outbound.nexthop import NextHop, NoRoute, NotNow
from mxbackup.wire import contract
from mxbackup.wire.contract import Attempt, Delivery, Job, JobResult, Outcome, Settings

# The connect-only check (``mxbackup.wire.reach.reachable`` with the reactor bound in):
# candidates, a connect timeout and the source address in, a Deferred firing True once one
# of them connected.
Check = Callable[[Sequence[contract.Candidate], float, str], "defer.Deferred[bool]"]

NO_ADDRESS = "no address to connect to (or only our own)"


@lru_cache(maxsize=4096)  # called for every inbound connection (``liveness.seen``)
def normal_ip(ip: str) -> str:
    """One spelling per address (an IPv4-mapped IPv6 address is its IPv4 address)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    mapped = getattr(address, "ipv4_mapped", None)
    return str(mapped or address)


def no_wait() -> defer.Deferred[None]:
    """The ``ready`` of a probe: it has no jobs, so nothing to wait for."""
    return defer.succeed(None)


def decided(jobs: Sequence[Job], outcome: Outcome, attempt: Attempt) -> Delivery:
    """A delivery decided without a client: every recipient gets ``outcome``."""
    results = tuple(
        defer.succeed(JobResult(job, dict.fromkeys(job.recipients, outcome), at_end=True))
        for job in jobs
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
        # the addresses each route's target was last found at, and the targets at each
        # address: an inbound connection from one of them is a sign of life (``liveness``)
        self.addresses: dict[str, frozenset[str]] = {}
        self.targets_at: dict[str, set[str]] = defaultdict(set)
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        self.config = config
        self._route_by_key = {r.domain: r for r in config.routes}
        set_names = getattr(self.nexthop, "set_names", None)
        if set_names is not None:  # our names: an MX host by one of them is us (use_mx)
            set_names(config.server.hostname, config.delivery.helo_name)

    def candidates(self, key: str) -> defer.Deferred[list[contract.Candidate]]:
        """Where target ``key`` is: its route's hosts, or its domain's MX hosts."""
        route = self._route_by_key.get(key)
        if route is None:  # MX delivery (bounces): many domains, none of them a primary
            return defer.maybeDeferred(self.nexthop.for_domain, key.removeprefix("mx:"))
        d = defer.maybeDeferred(self.nexthop.for_route, route)
        return d.addCallback(self._found, key)

    def _found(self, candidates: list[contract.Candidate], key: str) -> list[contract.Candidate]:
        ips = frozenset(normal_ip(c.ip) for c in candidates)
        old = self.addresses.get(key, frozenset())
        if ips != old:
            for ip in old - ips:
                self.targets_at[ip].discard(key)
                if not self.targets_at[ip]:
                    del self.targets_at[ip]
            for ip in ips - old:
                self.targets_at[ip].add(key)
            self.addresses[key] = ips
        return candidates

    @defer.inlineCallbacks
    def reach(self, key: str, timeout: float) -> Any:
        """Fires True when one of the target's addresses accepts a TCP connection (closed at
        once, no SMTP); False when none does, or there is nowhere (or nothing) to check."""
        if self.check is None:
            return False
        try:
            candidates = yield self.candidates(key)
        except (NoRoute, NotNow):
            return False
        if not candidates:
            return False
        connected = yield self.check(candidates, timeout, self.config.delivery.source_address)
        return bool(connected)

    @defer.inlineCallbacks
    def dial(self, key: str, jobs: Sequence[Job], ready: contract.Ready) -> Any:
        """Fires with the Delivery of ``jobs`` (none: a probe) to target ``key``."""
        route = self._route_by_key.get(key)
        try:
            candidates = yield self.candidates(key)
        except NoRoute as e:
            return decided(jobs, Outcome("permfail", 0, f"5.1.2 {e}"), Attempt(True, "", str(e)))
        except NotNow as e:  # use_mx: a DNS failure, or the MX hosts lead back to us
            return decided(jobs, Outcome("tempfail", 0, str(e)), Attempt(False, "", str(e)))
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
            source_address=d.source_address,
        )
