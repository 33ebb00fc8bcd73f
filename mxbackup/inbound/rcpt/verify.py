"""Link: recipient verification for routes with ``verify_recipients`` and ``addresses: all``.

The cache first (the state store's ``verify`` namespace): a live positive entry accepts, a
live negative one refuses (550 5.1.1 with the primary's text), even while the target is down.
On a miss, a callout asks the route's target (``callout: true``, and the scheduler does not
know the target to be down); its 2xx accepts and is remembered ``positive_ttl`` seconds, its
5xx refuses and is remembered ``negative_ttl`` seconds.  Concurrent RCPTs for one address
share one callout (``_inflight``).  Anything else (a 4xx, no answer within ``timeout``, the
target known down, ``callout: false``): ``when_unreachable`` decides: ``accept`` accepts (the
mail waits in our queue: a backup MX's point), ``accept_known`` answers 450 4.4.3 to an address
without a live positive entry.

The state store being unavailable never makes a permanent refusal and never refuses what the
primary accepts: the cache counts as a miss, the callout is made as usual, and when the target
cannot be asked either, ``when_unreachable`` decides (so ``accept_known`` answers 450, a
temporary refusal the sender retries).  It is logged at most once a minute and counted
(``Stats.store_errors``).

One log line per decision (``verify rcpt=... route=... result=... why=...``); counted in
``Stats.callouts`` (by outcome), ``Stats.verify_cache`` (hit/miss), ``Stats.refusals``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from mxbackup import replies
from mxbackup.config import Route
from mxbackup.health_view import TargetView
from mxbackup.inbound.rcpt.decision import ACCEPT, Candidate, Decision
from mxbackup.replies import Reply
from mxbackup.state.base import StoreUnavailable
from mxbackup.state.verifycache import Entry, VerifyCache, cache_key, target_text
from mxbackup.stats import Stats
from mxbackup.wire.callout import CalloutAnswer

if TYPE_CHECKING:
    from mxbackup.inbound.transaction import Transaction

log = Logger(namespace="mxbackup.verify")

STORE_LOG_INTERVAL = 60.0
Callout = Callable[[Route, str], defer.Deferred]  # -> Deferred[CalloutAnswer], never fails
_MISS = object()


class Verification:
    """The link.  Built once (``service.py``) and kept across reloads: its in-flight callouts
    and the store's state outlive a configuration; each RCPT reads its route as it is now."""

    def __init__(
        self,
        cache: VerifyCache | None,
        callout: Callout | None,
        view: TargetView,
        clock: Any,
        stats: Stats,
    ) -> None:
        self.cache = cache
        self.callout = callout
        self.view = view
        self.clock = clock
        self.stats = stats
        self._inflight: dict[str, list[defer.Deferred]] = {}
        self._store_logged_at: float | None = None

    def decide(self, transaction: Transaction, recipient: Candidate) -> Any:
        route = recipient.route
        if route is None or route.verify_recipients is None or route.addresses.kind != "all":
            return ACCEPT
        address = recipient.address
        lookup = (
            self.cache.lookup(route.domain, address)
            if self.cache is not None
            else defer.succeed(None)
        )
        lookup.addErrback(self._store_failed)
        lookup.addCallback(self._with_entry, route, address, transaction.client_ip)
        return _now_if_known(lookup)

    # -- the decision ----------------------------------------------------------------------
    def _with_entry(self, entry: Any, route: Route, address: str, ip: str) -> Any:
        if isinstance(entry, Entry):
            self.stats.verify_cache["hit"] += 1
            if entry.positive:
                return self._decided(ACCEPT, route, address, ip, "accepted", "cached positive")
            refusal = replies.VERIFY_REFUSED.format(entry.text)
            return self._decided(refusal, route, address, ip, "refused", "cached negative")
        self.stats.verify_cache["miss"] += 1
        vr = route.verify_recipients
        assert vr is not None
        if not vr.callout or self.callout is None:
            return self._unreachable(route, address, ip, "no callout")
        if self.view.is_down(route):
            self.stats.callouts["skipped_target_down"] += 1
            return self._unreachable(route, address, ip, "target known down")
        return self._ask(route, address).addCallback(self._answered, route, address, ip)

    def _answered(self, answer: CalloutAnswer, route: Route, address: str, ip: str) -> Any:
        why = f"callout {answer.remote} {answer.code} {answer.text}".strip()
        if answer.kind == "accepted":
            return self._decided(ACCEPT, route, address, ip, "accepted", why)
        if answer.kind == "refused":
            refusal = replies.VERIFY_REFUSED.format(target_text(answer.text))
            return self._decided(refusal, route, address, ip, "refused", why)
        return self._unreachable(route, address, ip, why)

    def _unreachable(self, route: Route, address: str, ip: str, why: str) -> Decision:
        vr = route.verify_recipients
        assert vr is not None
        if vr.when_unreachable == "accept":
            return self._decided(ACCEPT, route, address, ip, "accepted", f"unreachable: {why}")
        reply = replies.VERIFY_UNAVAILABLE.format(address)
        return self._decided(reply, route, address, ip, "deferred", f"unreachable: {why}")

    def _decided(
        self, decision: Decision, route: Route, address: str, ip: str, result: str, why: str
    ) -> Decision:
        if isinstance(decision, Reply):
            self.stats.refusals["verify_refused" if decision.code >= 500 else "verify_unknown"] += 1
        log.info(
            "verify rcpt=<{rcpt}> route={route} client={ip} result={result} why={why}",
            rcpt=address.encode("ascii", "backslashreplace").decode(),
            route=route.domain,
            ip=ip,
            result=result,
            why=why,
        )
        return decision

    # -- one callout per address ---------------------------------------------------------
    def _ask(self, route: Route, address: str) -> defer.Deferred:
        key = cache_key(route.domain, address)
        waiting = self._inflight.get(key)
        d: defer.Deferred = defer.Deferred()
        if waiting is not None:
            self.stats.callouts["shared"] += 1
            waiting.append(d)
            return d
        self._inflight[key] = [d]
        assert self.callout is not None
        self.callout(route, address).addBoth(self._callout_done, route, address, key)
        return d

    def _callout_done(self, answer: Any, route: Route, address: str, key: str) -> None:
        if not isinstance(answer, CalloutAnswer):
            log.failure("callout for {rcpt} failed", answer, rcpt=address)
            answer = CalloutAnswer("unreachable", 0, "local error")
        self.stats.callouts[answer.kind] += 1
        self._remember(route, address, answer)
        for d in self._inflight.pop(key, []):
            d.callback(answer)

    def _remember(self, route: Route, address: str, answer: CalloutAnswer) -> None:
        vr = route.verify_recipients
        if self.cache is None or vr is None or answer.kind == "unreachable":
            return
        positive = answer.kind == "accepted"
        ttl = vr.positive_ttl if positive else vr.negative_ttl
        d = self.cache.remember(route.domain, address, positive, answer.text, ttl)
        d.addErrback(self._store_failed)

    def _store_failed(self, failure: Any) -> None:
        """The store could not answer: counted, logged at most once a minute; a miss."""
        failure.trap(StoreUnavailable)
        self.stats.store_errors += 1
        now = self.clock.seconds()
        if self._store_logged_at is None or now - self._store_logged_at >= STORE_LOG_INTERVAL:
            self._store_logged_at = now
            log.warn(
                "state store unavailable ({error}): verifying without the cache "
                "({n} errors so far)",
                error=failure.getErrorMessage(),
                n=self.stats.store_errors,
            )
        return None


def _now_if_known(d: defer.Deferred) -> Any:
    """``d``'s value if it has one already (a cache hit in SQLite: no Deferred for the chain
    and the session to wait on, which measurably costs), else ``d``."""
    known: list = []
    d.addBoth(lambda result: known.append(result) or result)
    if known and not isinstance(known[0], (defer.Deferred, Failure)):
        return known[0]
    return d
