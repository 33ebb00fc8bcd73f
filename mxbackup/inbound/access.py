"""Who may send what: hMailServer's IP-range matrix.

Pure: no reactor.  The client's address selects the most specific range containing it
(longest prefix).  That range says, for the pair (sender kind -> recipient kind), whether the
delivery is allowed and whether it needs SMTP authentication.
"""

from __future__ import annotations

from collections.abc import Iterable

from mxbackup import replies
from mxbackup.config import IPRange, Kind
from mxbackup.names import client_address
from mxbackup.replies import Reply


class AccessMatrix:
    def __init__(self, ranges: Iterable[IPRange]) -> None:
        entries = [(net, r) for r in ranges for net in r.networks]
        # Longest prefix first; among equals, file order.
        self._entries = sorted(entries, key=lambda e: -e[0].prefixlen)

    def range_for(self, client_ip: str) -> IPRange | None:
        ip = client_address(client_ip)
        if ip is None:
            return None
        for net, ip_range in self._entries:
            if ip.version == net.version and ip in net:
                return ip_range
        return None

    def decide(
        self, client_ip: str, authenticated: bool, sender: Kind, recipient: Kind
    ) -> Reply | None:
        """None when the delivery may go ahead; otherwise the refusal to send."""
        ip_range = self.range_for(client_ip)
        if ip_range is None or not ip_range.allow.get(sender, recipient):
            return replies.DELIVERY_NOT_ALLOWED
        if ip_range.require_auth.get(sender, recipient) and not authenticated:
            return replies.AUTH_REQUIRED
        return None
