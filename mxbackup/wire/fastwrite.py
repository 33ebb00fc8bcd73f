"""Writing to a TCP transport without waiting for the reactor's next turn.

Twisted's ``transport.write`` only buffers: it registers the socket for writability, and the
reactor sends at the end of its turn, then unregisters: two ``epoll_ctl`` calls and a delay
for every burst of a request-reply protocol like SMTP.  When nothing is waiting in the
transport's buffer, ``write_now`` hands the data straight to the socket; whatever the socket
does not take goes through the transport as usual, so order and flow control are kept.  TLS
transports always take the usual path: those that ``startTLS`` made (``TLS`` set) and those
that wrap a TCP connection (a TLS endpoint's ``TLSMemoryBIOProtocol`` forwards attribute
lookups, ``socket`` included, to the connection under it: hence the exact type check).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import tcp


def write_now(transport: Any, data: bytes) -> None:
    if (
        isinstance(transport, tcp.Connection)
        and not transport.TLS
        and not transport.dataBuffer
        and not transport._tempDataBuffer
        and transport.connected
        and not transport.disconnecting
    ):
        try:
            sent = transport.socket.send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = 0  # the transport's own write meets the error and closes
        data = data[sent:]
        if not data:
            return
    transport.write(data)
