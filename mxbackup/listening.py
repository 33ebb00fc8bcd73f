"""Listening endpoints that say how binding went.

Every listener of the server (``server.listen``, the control socket, the manhole, metrics) is
wrapped in a ``Listener``: ``StreamServerEndpointService`` calls its ``listen`` as it would
the endpoint's, and the wrapper keeps the bound port or the reason it could not bind, and
tells whoever asked (the next hop learns our own SMTP addresses, so we never deliver to
ourselves).  The service uses it to refuse to run half-started: a server without its SMTP
listener would answer on its control socket while systemd's ``Restart=`` never fires.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.python.failure import Failure
from zope.interface import implementer


@implementer(IStreamServerEndpoint)
class Listener:
    def __init__(
        self,
        endpoint: IStreamServerEndpoint,
        what: str,
        on_bound: Callable[[Any], None] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.what = what  # the key and its value, for the one-line error: server.listen[0] ...
        self.on_bound = on_bound
        self.error = ""  # why it could not bind
        self.settled: defer.Deferred[None] = defer.Deferred()  # bound or failed; never fails

    def listen(self, factory: Any) -> defer.Deferred:
        return self.endpoint.listen(factory).addCallbacks(self._bound, self._failed)

    def _bound(self, port: Any) -> Any:
        if self.on_bound is not None:
            self.on_bound(port)
        self.settled.callback(None)
        return port

    def _failed(self, failure: Failure) -> Failure:
        self.error = failure.getErrorMessage() or failure.type.__name__
        self.settled.callback(None)
        return failure  # the service that listens still hears of it


def all_settled(listeners: list[Listener]) -> defer.Deferred[list[Listener]]:
    """Fires with the listeners that could not bind, once every one has tried."""
    settled = defer.gatherResults([listener.settled for listener in listeners])
    return settled.addCallback(lambda _: [lst for lst in listeners if lst.error])
