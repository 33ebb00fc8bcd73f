"""What the SMTP side may know about the delivery side, per route, without importing it.

The outbound scheduler implements this (``mxbackup.outbound.targetview``) and ``service.py``
hands it to the inbound side: ``accept_when_target_up`` asks ``is_up``, callouts ask
``is_down`` (no callout to a target known to be down), the route quota asks
``queued_messages`` (O(1): the scheduler keeps the count).

Pure: no reactor.
"""

from __future__ import annotations

from typing import Protocol

from mxbackup.config import Route


class TargetView(Protocol):
    def is_up(self, route: Route) -> bool | None:
        """True: the last probe or delivery to the route's target succeeded and nothing failed
        since.  False: it is known to be down.  None: not known (never tried since start)."""

    def is_down(self, route: Route) -> bool:
        """The target is known to be down (a session or probe failed, none worked since)."""

    def queued_messages(self, route: Route) -> int:
        """Messages in the queue with recipients still pending for the route's target."""


class UnknownTargets:
    """A view that knows nothing (no scheduler: tests, tools): never up, never down, empty."""

    def is_up(self, route: Route) -> bool | None:
        return None

    def is_down(self, route: Route) -> bool:
        return False

    def queued_messages(self, route: Route) -> int:
        return 0
