"""Writing to a TCP transport without waiting for the reactor's next turn.

Twisted's ``transport.write`` only buffers: it registers the socket for writability, and the
reactor sends at the end of its turn, then unregisters: two ``epoll_ctl`` calls and a delay
for every burst of a request-reply protocol like SMTP.  When nothing is waiting in the
transport's buffer, ``write_now`` hands the data straight to the socket (``getHandle()``);
whatever the socket does not take goes through ``transport.write`` as usual, so order and flow
control are kept.

How it knows the buffer is empty without reading Twisted's private buffers: **every write of
the protocols that use it goes through ``write_now``** (the inbound server's replies, the SMTP
client's commands and message data).  A transport is empty until ``write_now`` first hands
something to ``transport.write``; from then on it is remembered (a weak set: nothing is stored
on Twisted's objects, nothing outlives the connection) and always takes the usual path, since
its buffer may hold data the socket has not taken yet.  A protocol that writes to its transport
any other way must not use ``write_now`` on it.

TLS transports always take the usual path: those that ``startTLS`` made (they provide
``ISSLTransport`` from then on) and those that wrap a TCP connection (a TLS endpoint's
``TLSMemoryBIOProtocol`` forwards attribute lookups, ``getHandle`` included, to the connection
under it: hence the type check, not duck typing).
"""

from __future__ import annotations

import weakref
from typing import Any

from twisted.internet import tcp
from twisted.internet.interfaces import ISSLTransport

# Transports that were handed data through ``transport.write``: their buffer may be in use.
_buffered: weakref.WeakSet[Any] = weakref.WeakSet()


def write_now(transport: Any, data: bytes) -> None:
    if _direct(transport):
        try:
            sent = transport.getHandle().send(data)
        except (BlockingIOError, InterruptedError):
            sent = 0
        except OSError:
            sent = 0  # the transport's own write meets the error and closes
        data = data[sent:]
        if not data:
            return
    if isinstance(transport, tcp.Connection):
        _buffered.add(transport)  # its buffer may hold data from now on
    transport.write(data)


def _direct(transport: Any) -> bool:
    return (
        isinstance(transport, tcp.Connection)
        and not ISSLTransport.providedBy(transport)
        and transport not in _buffered
        and bool(transport.connected)
        and not transport.disconnecting
    )
