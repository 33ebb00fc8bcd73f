"""ETRN (RFC 1985): a client asks us to flush the queue for a node.

Allowed only from IP ranges with ``allow_etrn`` (by default the loopback ones) and only for
routes we have; the queue is reached through an injected ``session.QueueFlusher`` (the
scheduler), never imported.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.logger import Logger

from mxbackup import replies
from mxbackup.names import DomainError, parse_domain

if TYPE_CHECKING:
    from mxbackup.inbound.session import QueueFlusher, Session

log = Logger(namespace="mxbackup.smtp_in")


class Etrn:
    def __init__(self, session: Session) -> None:
        self.session = session

    def allowed(self) -> bool:
        s = self.session
        ip_range = s.policy.access.range_for(s.client_ip)
        return s.factory.etrn is not None and ip_range is not None and ip_range.allow_etrn

    def command(self, rest: str) -> None:
        s = self.session
        node = rest.strip()
        if not self.allowed():
            s.error(replies.ETRN_NOT_ALLOWED.format(node or "-", "not from your address"))
            return
        if s.transaction is not None:
            s.error(replies.ETRN_IN_TRANSACTION)
            return
        try:
            domain = parse_domain(node[1:] if node[:1] in ("@", "#") else node, wildcard=True)
        except DomainError:
            s.error(replies.ETRN_SYNTAX)
            return
        flusher = s.factory.etrn
        assert flusher is not None
        keys = self.keys(node, domain, flusher)
        if not keys:
            s.error(replies.ETRN_NOT_ALLOWED.format(node, "not a domain we back up"))
            return
        self._flush(node, keys, flusher)

    def _flush(self, node: str, keys: list[str], flusher: QueueFlusher) -> None:
        s = self.session
        try:
            count = sum(flusher.flush(key) for key in keys)
        except Exception:  # noqa: BLE001
            log.failure("ETRN {node} failed", node=node)
            s.error(replies.ETRN_UNABLE.format(node))
            return
        log.info("etrn node={node} client={ip} messages={n}", node=node, ip=s.client_ip, n=count)
        if count:
            s.reply(replies.ETRN_STARTED_COUNT.format(count, node))
        else:
            s.reply(replies.ETRN_NOTHING.format(node))

    def keys(self, node: str, domain: str, flusher: QueueFlusher) -> list[str]:
        """``domain``: its route; ``@domain``: routes of it and its subdomains; ``#name``:
        the queue named like a route."""
        routes = [r.domain for r in self.session.policy.config.routes]
        if node.startswith("#"):
            return [r for r in routes if r == domain]
        if node.startswith("@"):
            return [r for r in routes if r.removeprefix("*.") == domain or r.endswith("." + domain)]
        return flusher.keys_for_domain(domain)
