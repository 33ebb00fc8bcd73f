"""The state store's interface, apart from ``__init__`` so the backends can import it."""

from __future__ import annotations

from typing import Protocol

from twisted.internet.defer import Deferred


class StoreUnavailable(Exception):
    """The store could not answer (I/O error, server down, timeout)."""


class StateStore(Protocol):
    def get(self, namespace: str, key: str) -> Deferred[bytes | None]:
        """The value, or None when absent or expired."""

    def put(self, namespace: str, key: str, value: bytes, ttl: float) -> Deferred[None]:
        """Store ``value`` for ``ttl`` seconds (``ttl <= 0``: remove the key)."""

    def delete(self, namespace: str, key: str) -> Deferred[bool]:
        """Remove the key; True when a live entry was there."""

    def scan(self, namespace: str, prefix: str = "") -> Deferred[list[tuple[str, bytes, float]]]:
        """Every live entry of ``namespace`` whose key starts with ``prefix``, as
        ``(key, value, expires_at)`` (``expires_at`` on the store's clock)."""

    def close(self) -> Deferred[None]:
        """Write what is pending and let go of the file or connection."""
