"""What the checks are given from outside (the composition root builds it once; it outlives
reloads): the resolver, the clock, a way to run CPU-heavy work away from the reactor
thread, the state store, the DNSBL cache and the counters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from mxbackup.checks.dnsbl import DNSBLCache
from mxbackup.stats import Stats


def inline(fn: Callable[..., Any], *args: Any) -> defer.Deferred[Any]:
    """Run ``fn`` now, on the calling thread (tests; the default without a thread pool)."""
    return defer.maybeDeferred(fn, *args)


@dataclass
class CheckEnv:
    resolver: Any = None  # twisted.names IResolver (check_wiring.make_resolver); None: no DNS
    clock: Any = None  # IReactorTime
    offload: Callable[..., defer.Deferred[Any]] = inline  # fn(*args) off the reactor thread
    store: Any = None  # mxbackup.state StateStore, for greylisting; None: greylisting off
    stats: Stats = field(default_factory=Stats)
    dnsbl_cache: DNSBLCache = field(default_factory=DNSBLCache)

    def count(self, check: str, result: str) -> None:
        self.stats.check_results[(check, result)] += 1
