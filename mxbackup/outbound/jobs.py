"""From a queued message to the delivery contract's ``Job``: what the sender asked for travels
with it.

Pure: no reactor, no I/O.  The envelope keeps the ESMTP parameters as the client gave them
(``Envelope.params``: SMTPUTF8, BODY, RET, ENVID; ``Recipient.params``: NOTIFY, ORCPT); the
job carries them to the SMTP client, which passes them to a target that offers the extension
(``mxbackup.wire.transaction``) and otherwise leaves it to us to honour them (``dsnpolicy``).
"""

from __future__ import annotations

from collections.abc import Sequence

from mxbackup.queue.envelope import Envelope, Recipient
from mxbackup.routes import RouteTable
from mxbackup.wire.contract import Job


def job_for(
    envelope: Envelope, rcpts: Sequence[Recipient], path: str, routes: RouteTable, key: str
) -> Job:
    """The job for ``rcpts`` of ``envelope`` at target ``key`` (a route's domain pattern, or
    ``mx:<domain>``: mail delivered by MX lookup converts 8-bit mail, the default)."""
    params = envelope.params
    route = None if key.startswith("mx:") else routes.lookup(key)
    return Job(
        qid=envelope.id,
        sender=envelope.sender,
        recipients=tuple(r.address for r in rcpts),
        path=path,
        size=envelope.size,
        eight_bit=(params.get("BODY") or "").upper() == "8BITMIME",
        smtputf8="SMTPUTF8" in params,
        ret=_upper(params.get("RET")),
        envid=params.get("ENVID") or None,
        notify=tuple(_upper(r.params.get("NOTIFY")) for r in rcpts),
        orcpt=tuple(r.params.get("ORCPT") or None for r in rcpts),
        convert_8bit=route.allow_8bit_conversion if route is not None else True,
    )


def _upper(value: str | None) -> str | None:
    return value.upper() if value else None
