"""The route table: which domains we back up, and how.

Pure: no reactor.  Matching is on whole labels and case-insensitive: ``example.com`` matches
only ``example.com``; ``*.example.org`` matches any subdomain of ``example.org`` (not the
apex).  The most specific route wins, whatever the order in the file.  Names are matched in
their A-label form (``names.lookup_form``): the configuration's are normalised when it is read,
a U-label domain from the wire or the queue when it is looked up.
"""

from __future__ import annotations

from collections.abc import Iterable

from mxbackup.config import Config, Kind, Route
from mxbackup.names import lookup_form


class RouteTable:
    def __init__(self, routes: Iterable[Route]) -> None:
        self._exact: dict[str, Route] = {}
        self._wild: dict[str, Route] = {}  # "example.org" for "*.example.org"
        for route in routes:
            if route.domain.startswith("*."):
                self._wild[route.domain[2:]] = route
            else:
                self._exact[route.domain] = route

    def lookup(self, domain: str) -> Route | None:
        """The route for ``domain`` (no trailing dot; U-labels or A-labels), or None."""
        found = lookup_form(domain)
        if found is None:
            return None
        domain = found
        route = self._exact.get(domain)
        if route is not None:
            return route
        labels = domain.split(".")
        for i in range(1, len(labels)):
            route = self._wild.get(".".join(labels[i:]))
            if route is not None:
                return route
        return None

    def sender_kind(self, domain: str | None) -> Kind:
        if domain is None:
            return "external"
        route = self.lookup(domain)
        return route.treat_sender_as if route is not None else "external"

    def __len__(self) -> int:
        return len(self._exact) + len(self._wild)


class _Latest:
    """The table of the configuration in force, built once: the SMTP side and the delivery
    side ask for it at start-up and again at each reload, with the same ``Config``."""

    def __init__(self) -> None:
        self.config: Config | None = None
        self.table = RouteTable(())

    def table_for(self, config: Config) -> RouteTable:
        if config is not self.config:
            self.config, self.table = config, RouteTable(config.routes)
        return self.table


table_for = _Latest().table_for
