"""The connect-only check: does anything accept a TCP connection at the target's addresses?

No SMTP: the connection is closed as soon as it is made, before anything is read or written.
It costs the target one SYN (answered by a RST while its port is closed) and, once it is
listening, one accepted connection closed at once.  The scheduler uses it to notice within
seconds that a down target is back, and then makes its full probe (``outbound/liveness``).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

from twisted.internet import defer, protocol

from mxbackup.wire.contract import Candidate, bind_address

__all__ = ["reachable"]


class _Close(protocol.Protocol):
    def connectionMade(self) -> None:
        self.transport.abortConnection()  # nothing written, nothing waited for


class _Factory(protocol.ClientFactory):
    """``result`` fires True once connected, False when the connection failed."""

    noisy = False  # no "Starting/Stopping factory" lines: a check every few seconds

    def __init__(self) -> None:
        self.result: defer.Deferred[bool] = defer.Deferred()

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        if not self.result.called:
            self.result.callback(True)
        proto = _Close()
        proto.factory = self
        return proto

    def clientConnectionFailed(self, connector: Any, reason: Any) -> None:
        if not self.result.called:
            self.result.callback(False)


@defer.inlineCallbacks
def reachable(
    reactor: Any, candidates: Sequence[Candidate], timeout: float, source: str = ""
) -> Generator[Any, Any, bool]:
    """True as soon as one of ``candidates`` (tried in order) accepts a connection; False
    when none does within ``timeout`` seconds each.  Never fails."""
    for candidate in candidates:
        factory = _Factory()
        try:
            bind = bind_address(source, candidate.ip)
            reactor.connectTCP(
                candidate.ip, candidate.port, factory, timeout=timeout, bindAddress=bind
            )
        except Exception:  # noqa: BLE001 - a bad address is one that does not connect
            continue
        connected = yield factory.result
        if connected:
            return True
    return False
