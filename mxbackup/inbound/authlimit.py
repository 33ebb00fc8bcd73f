"""Failed AUTH attempts per client, across connections: beyond ``limit`` failures within
``window`` seconds, AUTH answers ``454 4.7.0`` without looking at the password until the
oldest of those failures is ``window`` seconds old.

A session already ends after 20 errors (``HARD_ERROR_LIMIT``); this stops a client that
reconnects to go on guessing, and keeps a guesser from making us spend bcrypt time.  IPv6
clients are counted per /64 (one host usually has a whole /64).  Memory is bounded: at most
``max_clients`` clients are remembered, the one that failed longest ago is forgotten first.

Pure: the clock is injected.
"""

from __future__ import annotations

import ipaddress
from collections import OrderedDict, deque
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

MAX_CLIENTS = 10000


def client_key(ip: str) -> str:
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.ip_network(f"{address}/64", strict=False))
    return str(address)


class AuthFailures:
    def __init__(
        self,
        clock: IReactorTime,
        limit: int = 10,
        window: float = 600.0,
        max_clients: int = MAX_CLIENTS,
    ) -> None:
        self.clock = clock
        self.limit = limit  # 0: no limit
        self.window = window
        self.max_clients = max_clients
        self.failures: OrderedDict[str, deque[float]] = OrderedDict()

    def reconfigure(self, limit: int, window: float) -> None:
        self.limit, self.window = limit, window
        self.failures.clear()

    def blocked(self, ip: str) -> bool:
        if not self.limit:
            return False
        times = self._recent(client_key(ip))
        return times is not None and len(times) >= self.limit

    def failed(self, ip: str) -> None:
        if not self.limit:
            return
        key = client_key(ip)
        times = self._recent(key)
        if times is None:
            times = self.failures[key] = deque(maxlen=self.limit)
        times.append(self.clock.seconds())
        self.failures.move_to_end(key)
        while len(self.failures) > self.max_clients:
            self.failures.popitem(last=False)

    def _recent(self, key: str) -> deque[float] | None:
        """The client's failures within the window (older ones dropped), or None."""
        times = self.failures.get(key)
        if times is None:
            return None
        since = self.clock.seconds() - self.window
        while times and times[0] <= since:
            times.popleft()
        if not times:
            del self.failures[key]
            return None
        return times
