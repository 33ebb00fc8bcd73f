"""The ``checks:`` of one configuration, prepared once (``policy.Policy`` holds it; rebuilt on
reload, while what outlives a reload, the DNSBL cache and the counters, is in the injected
``CheckEnv``).  Who is exempt, and what starts at connect.

The checks themselves are in ``mxbackup.checks`` (DNS, SPF, DKIM, ARC, greylisting) and are
asked from the RCPT links (``rcpt.dnsbl``, ``rcpt.greylisting``), at MAIL (``mailchecks``)
and at the end of data (``endchecks``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mxbackup import replies
from mxbackup.checks.dnsbl import DNSBL
from mxbackup.checks.env import CheckEnv
from mxbackup.checks.greylist import Greylist
from mxbackup.checks.spf import SPF, SPFResult
from mxbackup.config import Config
from mxbackup.inbound.access import AccessMatrix
from mxbackup.inbound.endchecks import EndChecks
from mxbackup.inbound.rcpt.decision import ACCEPT, Decision

if TYPE_CHECKING:
    from mxbackup.inbound.transaction import Transaction
    from mxbackup.queue.spool import Incoming

log = Logger(namespace="mxbackup.checks")


class Checks:
    def __init__(self, config: Config, env: CheckEnv, access: AccessMatrix) -> None:
        self.config = config.checks
        self.env = env
        self.hostname = config.server.hostname
        self._access = access
        self._exempt = frozenset(self.config.exempt_ranges)
        checks = self.config
        self.dnsbl: DNSBL | None = None
        if checks.dnsbl:
            self.dnsbl = DNSBL(
                checks.dnsbl,
                env.resolver,
                env.clock.seconds,
                checks.dns_timeout,
                env.dnsbl_cache,
                count=lambda result: env.count("dnsbl", result),
            )
        self.spf: SPF | None = None
        if checks.spf != "off":
            self.spf = SPF(
                env.resolver,
                checks.dns_timeout,
                self.hostname,
                count=lambda result: env.count("spf", result),
            )

        self.greylist: Greylist | None = None
        if checks.greylisting is not None:
            if env.store is None:
                log.warn("checks.greylisting: no state store; greylisting is off")
            else:
                self.greylist = Greylist(
                    checks.greylisting,
                    env.store,
                    env.clock.seconds,
                    count=lambda result: env.count("greylisting", result),
                )
        self.end = EndChecks(self)

    def exempt_ip(self, client_ip: str) -> bool:
        """The client's range (the most specific containing it) is in ``exempt_ranges``."""
        if not self._exempt:
            return False
        ip_range = self._access.range_for(client_ip)
        return ip_range is not None and ip_range.name in self._exempt

    def exempt(self, transaction: Transaction) -> bool:
        """Authenticated clients and clients of exempt ranges skip every check."""
        return transaction.authenticated or self.exempt_ip(transaction.client_ip)

    def connected(self, client_ip: str) -> None:
        """A client connected: start what takes time (the DNSBL lookups)."""
        if self.dnsbl is not None and not self.exempt_ip(client_ip):
            self.dnsbl.start(client_ip)

    def refused(self, reason: str) -> None:
        self.env.stats.refusals[reason] += 1

    # -- DATA: see endchecks ---------------------------------------------------------------
    def forged_results_filter(self, transaction: Transaction, write: Any) -> Any:
        """A filter for the DATA stream removing Authentication-Results in our name, or None."""
        return self.end.forged_results_filter(transaction, write)

    def at_end(self, incoming: Incoming, transaction: Transaction) -> Deferred[None] | None:
        """DKIM, ARC and Authentication-Results for the message: None when there is nothing
        to do, else a Deferred (never failing) that fires once the fields are prepended."""
        return self.end.at_end(incoming, transaction)

    # -- MAIL ------------------------------------------------------------------------------
    def at_mail(self, transaction: Transaction) -> Decision | Deferred[Decision]:
        """SPF of the MAIL FROM domain (the HELO name for <>), kept on the transaction for
        Authentication-Results; ``spf: reject`` refuses a ``fail`` here (550 5.7.23)."""
        if self.spf is None or self.exempt(transaction):
            return ACCEPT
        d = self.spf.check(transaction.client_ip, transaction.sender_text, transaction.helo)
        return d.addCallback(self._spf_decided, transaction)

    def _spf_decided(self, result: SPFResult, transaction: Transaction) -> Decision:
        transaction.results["spf"] = result
        refuse = result.result == "fail" and self.config.spf == "reject"
        log.info(
            "spf {result} {identity}={domain} client={ip} mechanism={mechanism}{refused}",
            result=result.result,
            identity=result.identity,
            domain=result.domain,
            ip=transaction.client_ip,
            mechanism=result.mechanism,
            refused=" (refused)" if refuse else "",
        )
        if not refuse:
            return ACCEPT
        self.refused("spf")
        return replies.SPF_FAIL.format(result.domain, _explained(result))


def _explained(result: Any) -> str:
    return result.explanation or f"{result.mechanism or 'policy'} does not allow this client"
