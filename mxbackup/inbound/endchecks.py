"""The end of data: DKIM, ARC and Authentication-Results, decided before the 250.

Our header fields go on top of the stored message, above our Received: they are decided only
once the whole message is here, while the message has been streaming to the spool since the
354.  So they are *prepended at commit* (``Incoming.add_prefix``): a message still in memory
(up to ``incoming.SPILL``) simply gets them in front when it is sealed; a spilled one is copied
behind them in the spool process, in the commit's round, before anything is durable or
visible.  The 250 still means "message (with its seal) and envelope durable"; a crash before
it loses nothing the client was told we have.

Work: the DKIM/ARC key names are read from the header section and fetched through our
resolver first; then ``signatures.evaluate`` (body hashes, RSA) runs through the injected
``offload`` (the reactor's thread pool in the server), so a big message or an RSA signature
never stalls other sessions.  A key the first run still lacked is fetched and the run
repeated (at most ``MAX_RUNS``).  Nothing here ever refuses the message: a failure to seal is
logged and the message goes on without the seal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mxbackup.checks import authres
from mxbackup.checks.dnslookup import Answer, DNSTrouble, lookup
from mxbackup.checks.signatures import TROUBLE, Evaluation, Plan, Sealer, evaluate, key_names

if TYPE_CHECKING:
    from mxbackup.inbound.transaction import Transaction
    from mxbackup.queue.spool import Incoming

log = Logger(namespace="mxbackup.checks")
MAX_RUNS = 3


def load_sealer(checks: Any) -> Sealer | None:
    arc = checks.arc
    if arc is None:
        return None
    try:
        with open(arc.private_key, "rb") as f:
            return Sealer(arc.domain, arc.selector, f.read())
    except OSError as e:
        log.error("checks.arc.private_key: cannot read {path}: {e}", path=arc.private_key, e=e)
        return None


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class EndChecks:
    def __init__(self, checks: Any) -> None:
        """``checks``: the ``checking.Checks`` that owns this (config, env, exemption)."""
        self.checks = checks
        config = checks.config
        self.dkim = config.dkim == "tag"
        self.sealer = load_sealer(config)
        self.add_header = config.authentication_results

    def enabled(self) -> bool:
        return self.dkim or self.sealer is not None or self.add_header

    def forged_results_filter(self, txn: Transaction, write: Any) -> Any:
        if not self.enabled() or self.checks.exempt(txn):
            return None
        return authres.ForgedResultsFilter(self.checks.hostname, write)

    def at_end(self, incoming: Incoming, txn: Transaction) -> Deferred[None] | None:
        if not self.enabled() or self.checks.exempt(txn):
            return None
        results = _early_results(txn)
        if not (self.dkim or self.sealer):
            if results and self.add_header:
                incoming.add_prefix(authres.header(self.checks.hostname, results))
            return None
        plan = Plan(
            self.checks.hostname,
            tuple(results),
            self.dkim,
            self.sealer,
            self.add_header,
            int(self.checks.env.clock.seconds()),
        )
        message = incoming.contents()
        if message is not None:
            d: Deferred[bytes] = defer.succeed(message)
        else:
            incoming.flush()
            d = self.checks.env.offload(_read, incoming.path)
        d.addCallback(self._evaluate, plan, txn)
        d.addCallback(self._done, incoming, txn)
        return d.addErrback(self._failed, txn)

    def _evaluate(self, message: bytes, plan: Plan, txn: Transaction) -> Deferred[Evaluation]:
        keys: dict[str, Any] = {}
        return self._run(message, keys, plan, key_names(message), 0)

    def _run(
        self, message: bytes, keys: dict[str, Any], plan: Plan, names: list[str], runs: int
    ) -> Deferred[Evaluation]:
        fetches = [self._fetch(name, keys) for name in names if name not in keys]
        d = defer.gatherResults(fetches) if fetches else defer.succeed(None)
        d.addCallback(lambda _: self.checks.env.offload(evaluate, message, keys, plan))

        def again(ev: Evaluation) -> Any:
            if ev.missing and runs + 1 < MAX_RUNS:
                return self._run(message, keys, plan, ev.missing, runs + 1)
            if ev.missing:  # give up on those keys: temperror, and seal with that
                for name in ev.missing:
                    keys[name] = TROUBLE
                return self.checks.env.offload(evaluate, message, keys, plan)
            return ev

        return d.addCallback(again)

    def _fetch(self, name: str, keys: dict[str, Any]) -> Deferred[None]:
        def got(answer: Answer) -> None:
            texts = [b"".join(parts) for parts in answer.values("TXT")]
            keys[name] = texts[0] if texts else None

        def trouble(failure: Any) -> None:
            failure.trap(DNSTrouble)
            keys[name] = TROUBLE

        d = lookup(self.checks.env.resolver, name, "TXT", self.checks.config.dns_timeout)
        return d.addCallbacks(got, trouble)

    def _done(self, ev: Evaluation, incoming: Incoming, txn: Transaction) -> None:
        if ev.error:
            log.error("{error} client={ip}", error=ev.error, ip=txn.client_ip)
        for result in ev.results:
            method, _, rest = result.partition("=")
            if method in ("dkim", "arc"):
                self.checks.env.count(method, rest.split(" ", 1)[0])
        log.info(
            "checks id={id} client={ip} results={results} sealed={sealed}",
            id=incoming.id,
            ip=txn.client_ip,
            results="; ".join(ev.results),
            sealed=self.sealer is not None and not ev.error,
        )
        incoming.add_prefix(ev.prefix)

    def _failed(self, failure: Any, txn: Transaction) -> None:
        log.failure("end-of-data checks failed client={ip}", failure, ip=txn.client_ip)


def _early_results(txn: Transaction) -> list[str]:
    spf = txn.results.get("spf")
    if spf is None:
        return []
    return [f"spf={spf.result} {spf.ar_property()}"]
