"""Our Received header (RFC 5321 4.4), written by hand: Twisted's has embedded bare LFs
(pitfall 6).  Pure: no reactor.  Every value from the client is made safe before it is shown."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from email.utils import format_datetime
from functools import lru_cache

from mxbackup.inbound.basic import safe_helo


@lru_cache(maxsize=4)
def _date(second: int) -> str:
    """The RFC 5322 date of ``second`` (the header has seconds: one per second is made)."""
    return format_datetime(datetime.fromtimestamp(second, UTC))


def received_header(
    *,
    helo: str | None,
    client_ip: str,
    hostname: str,
    queue_id: str,
    tls: str | None,
    authenticated: bool,
    recipients: Sequence[str],
    now: float,
    utf8: bool = False,
) -> bytes:
    """``tls`` is None without TLS, else the description to show (may be empty); the
    recipient is named only when there is exactly one (more would disclose Bcc).  ``utf8``:
    the transaction had SMTPUTF8, so the protocol is ``UTF8SMTP`` (RFC 6531 4.4) and the header
    is UTF-8 (RFC 6532), else ASCII."""
    proto = "UTF8SMTP" if utf8 else "ESMTP" if helo is not None else "SMTP"
    if tls is not None:
        proto += "S"
    if authenticated:
        proto += "A"
    when = _date(int(now))
    for_ = f"\r\n\tfor <{recipients[0]}>" if len(recipients) == 1 else ""
    header = (
        f"Received: from {safe_helo(helo or '') or 'unknown'} ([{client_ip}])\r\n"
        f"\tby {hostname} (mxbackup) with {proto}{tls or ''} id {queue_id}"
        f"{for_}; {when}\r\n"
    )
    return header.encode("utf-8" if utf8 else "ascii", "replace")
