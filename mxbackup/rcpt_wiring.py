"""Composition of recipient verification and the per-route RCPT policy (called by
``service.py``): the state store, the verification cache on it, the callout client, the
scheduler's view of its targets, and the service that closes them at shutdown.

On the composition floor: it may import both the inbound and the outbound side (they never
import each other).
"""

from __future__ import annotations

import functools
from typing import Any

from twisted.application import service
from twisted.internet import defer, task

from mxbackup.config import Config
from mxbackup.inbound.rcpt.services import RcptServices
from mxbackup.inbound.rcpt.verify import Verification
from mxbackup.outbound.nexthop import NextHop
from mxbackup.outbound.scheduler import Scheduler
from mxbackup.outbound.targetview import SchedulerView, UpWatch
from mxbackup.state import StateStore, open_store
from mxbackup.state.verifycache import VerifyCache
from mxbackup.stats import Stats
from mxbackup.wire.callout import Callouts


class StateService(service.Service):
    """Holds the store and the callout client; at shutdown, kept callout connections are
    QUIT and the store writes what is pending.  Runs the ``UpWatch`` (every scheduler tick)
    while it runs."""

    def __init__(
        self,
        store: StateStore,
        callouts: Callouts,
        cache: VerifyCache,
        watch: UpWatch | None = None,
        clock: Any = None,
        interval: float = 1.0,
    ) -> None:
        self.store = store
        self.callouts = callouts
        self.cache = cache
        self.watch = watch
        self._loop: task.LoopingCall | None = None
        if watch is not None:
            self._loop = task.LoopingCall(watch.run)
            self._loop.clock = clock
        self.interval = interval

    def startService(self) -> None:
        super().startService()
        if self._loop is not None:
            self._loop.start(self.interval, now=False)

    def stopService(self) -> Any:
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self.callouts.close()
        return defer.maybeDeferred(self.store.close)


def make_rcpt_services(
    config: Config, reactor: Any, scheduler: Scheduler, nexthop: NextHop, stats: Stats
) -> tuple[RcptServices, StateService]:
    store = open_store(config.state_store, reactor)
    cache = VerifyCache(store)
    callouts = Callouts(reactor, nexthop.for_route, config.server.hostname)
    watch = UpWatch(scheduler, reactor)
    view = SchedulerView(scheduler, watch)
    verification = Verification(cache, callouts.verify, view, reactor, stats)
    scheduler.recorder.learn = functools.partial(_learn, cache, stats)
    state = StateService(store, callouts, cache, watch, reactor, config.delivery.tick)
    return RcptServices(view, stats, verification), state


def _learn(cache: VerifyCache, stats: Stats, route: Any, address: str, positive: bool, text: str):
    """What delivery learnt about a recipient (see ``outbound.recorder``)."""
    vr = route.verify_recipients
    ttl = vr.positive_ttl if positive else vr.negative_ttl
    d = cache.remember(route.domain, address, positive, text, ttl)

    def failed(failure: Any) -> None:
        stats.store_errors += 1

    return d.addErrback(failed)
