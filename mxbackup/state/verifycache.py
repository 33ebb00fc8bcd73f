"""The recipient-verification cache, in the state store's ``verify`` namespace.

Key: ``<route domain>|<address, lower case>``.  Local parts are case-sensitive in theory
(RFC 5321 2.4) and only the primary knows; in practice every primary folds case, and Postfix's
verify cache lowercases too, so one entry serves ``Bob@`` and ``bob@`` (one callout, not one
per spelling).  Value: ``+`` (the target accepted) or ``-<text>`` (it refused, with its reply
text).  Written by the RCPT callouts (inbound) and by delivery (outbound learns from every
RCPT reply), read by both and by the operator's ``mxbackup verify`` commands.
"""

from __future__ import annotations

from dataclasses import dataclass

from twisted.internet import defer

from mxbackup.replies import printable
from mxbackup.state.base import StateStore

NAMESPACE = "verify"


def cache_key(route_domain: str, address: str) -> str:
    return f"{route_domain.lower()}|{address.lower()}"


def target_text(text: str) -> str:
    """The target's reply text as we repeat it: its own enhanced code dropped (ours comes
    first), printable ASCII only, at most 200 characters."""
    head, _, rest = text.partition(" ")
    parts = head.split(".")
    if len(parts) == 3 and all(p.isdigit() for p in parts):
        text = rest
    return printable(text.strip())[:200] or "user unknown"


@dataclass(frozen=True)
class Entry:
    positive: bool
    text: str = ""  # a negative entry's reply text (the target's)
    expires_at: float = 0.0  # filled in by ``entries`` only

    def encode(self) -> bytes:
        return b"+" if self.positive else b"-" + self.text.encode("utf-8", "replace")

    @classmethod
    def decode(cls, value: bytes, expires_at: float = 0.0) -> Entry:
        if value[:1] == b"+":
            return cls(True, "", expires_at)
        return cls(False, value[1:].decode("utf-8", "replace"), expires_at)


class VerifyCache:
    def __init__(self, store: StateStore) -> None:
        self.store = store

    def lookup(self, route_domain: str, address: str) -> defer.Deferred:
        """The live ``Entry``, or None; fails with ``StoreUnavailable``."""
        d = self.store.get(NAMESPACE, cache_key(route_domain, address))
        return d.addCallback(lambda value: None if value is None else Entry.decode(value))

    def remember(
        self, route_domain: str, address: str, positive: bool, text: str, ttl: float
    ) -> defer.Deferred:
        entry = Entry(positive, "" if positive else target_text(text))
        return self.store.put(NAMESPACE, cache_key(route_domain, address), entry.encode(), ttl)

    @defer.inlineCallbacks
    def entries(self, route_domain: str | None = None):
        """``[(route domain, address, Entry)]``, sorted; of one route when given."""
        prefix = f"{route_domain.lower()}|" if route_domain else ""
        found = yield self.store.scan(NAMESPACE, prefix)
        out = []
        for key, value, expires_at in found:
            route, _, address = key.partition("|")
            out.append((route, address, Entry.decode(value, expires_at)))
        return out

    @defer.inlineCallbacks
    def forget(self, address: str, route_domain: str | None = None):
        """Remove ``address``'s entries (of every route unless one is given): how many went."""
        address = address.lower()
        entries = yield self.entries(route_domain)
        removed = 0
        for route, addr, _ in entries:
            if addr == address:
                removed += int((yield self.store.delete(NAMESPACE, cache_key(route, addr))))
        return removed
