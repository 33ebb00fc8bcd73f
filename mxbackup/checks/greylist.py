"""Greylisting: a new (client network, sender, recipient) triplet is told to come back later.

Pure: the store (``mxbackup.state``, namespace ``grey``) and the clock are injected.  The client
counts by its /24 (IPv4) or /64 (IPv6), since big senders retry from another address of the
same pool.  A triplet seen first at ``t`` passes when retried after ``t + delay`` and before
``t + delay + retry_window``; a triplet that passed is remembered ``pass_ttl`` (refreshed at
each pass).  A store that cannot answer never refuses: the recipient is accepted, the error
logged and counted (invariant 6).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.logger import Logger

from mxbackup.config.checks import GreylistingConfig
from mxbackup.names import client_address

log = Logger(namespace="mxbackup.checks")
NAMESPACE = "grey"
PASSED = b"pass"


def client_network(client_ip: str) -> str:
    ip = client_address(client_ip)
    if ip is None:
        return client_ip
    prefix = 24 if ip.version == 4 else 64
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def triplet(client_ip: str, sender: str, recipient: str) -> str:
    return f"{client_network(client_ip)} {sender.lower()} {recipient.lower()}"


class Greylist:
    """``passes(...)`` fires True (let it through) or False (450 4.7.1); never fails."""

    def __init__(
        self,
        config: GreylistingConfig,
        store: Any,
        now: Callable[[], float],
        count: Callable[[str], None] = lambda result: None,
    ) -> None:
        self.config = config
        self.store = store
        self.now = now
        self.count = count

    def passes(self, client_ip: str, sender: str, recipient: str) -> Deferred[bool]:
        key = triplet(client_ip, sender, recipient)
        try:
            d = self.store.get(NAMESPACE, key)
        except Exception as e:  # noqa: BLE001 - a store that raises is unavailable too
            d = defer.fail(e)
        d.addCallback(self._seen, key)
        return d.addErrback(self._unavailable, key)

    def _seen(self, value: bytes | None, key: str) -> Any:
        now, c = self.now(), self.config
        if value == PASSED:
            self.count("known")
            return self._remember(key, PASSED, c.pass_ttl, True)
        if value is not None:
            try:
                first = float(value)
            except ValueError:
                first = now
            if first + c.delay <= now:
                self.count("passed")
                return self._remember(key, PASSED, c.pass_ttl, True)
            self.count("early")
            return False
        self.count("new")
        return self._remember(key, repr(now).encode(), c.delay + c.retry_window, False)

    def _remember(self, key: str, value: bytes, ttl: float, answer: bool) -> bool:
        """Write and answer at once: the answer does not wait for the store's write (its
        batching may take 100 ms); a failed write only means the triplet is asked again."""
        try:
            d = self.store.put(NAMESPACE, key, value, ttl)
        except Exception as e:  # noqa: BLE001
            d = defer.fail(e)
        d.addErrback(self._write_failed, key)
        return answer

    def _write_failed(self, failure: Any, key: str) -> None:
        self.count("error")
        log.warn(
            "greylisting: state store write failed ({error}) for {key}",
            error=failure.getErrorMessage(),
            key=key,
        )

    def _unavailable(self, failure: Any, key: str) -> bool:
        self.count("error")
        log.warn(
            "greylisting: state store unavailable ({error}); accepting {key}",
            error=failure.getErrorMessage(),
            key=key,
        )
        return True
