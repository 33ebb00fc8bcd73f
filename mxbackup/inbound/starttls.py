"""STARTTLS (RFC 3207), through the transport's public ``startTLS``.

Pitfall 3: what the client pipelined after STARTTLS came in plain text and is discarded, and
everything learned before the handshake (HELO, AUTH, the transaction) is forgotten (4.2).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mxbackup import replies

if TYPE_CHECKING:
    from mxbackup.inbound.session import Session


class StartTLS:
    def __init__(self, session: Session) -> None:
        self.session = session

    def command(self, rest: str) -> None:
        s = self.session
        if rest:
            s.error(replies.BAD_SYNTAX)
        elif s.tls:
            s.error(replies.TLS_ALREADY)
        elif not s.can_start_tls:
            s.error(replies.TLS_UNAVAILABLE)
        elif s.transaction is not None:
            s.error(replies.TLS_IN_TRANSACTION)
        else:
            s.reply(replies.START_TLS)
            s.discard_input()
            s.transport.startTLS(s.factory.tls_context)
            s.tls = True
            s.helo = None
            s.authenticated = False
            s.auth_user = None
            s.transaction = None


def tls_description(transport: Any) -> str:
    """`` (TLSv1.3 TLS_AES_256_GCM_SHA384)`` for the Received header, or "" when unknown."""
    try:
        conn = transport.getHandle()
        return f" ({conn.get_protocol_version_name()} {conn.get_cipher_name()})"
    except Exception:  # noqa: BLE001 - informational only
        return ""
