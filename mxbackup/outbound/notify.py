"""Queueing DSNs: the notice is built by ``bounce`` and committed to the spool like any mail.

It reads the original's header section through the spool, commits the DSN (from ``<>`` to the
original sender, routed like any recipient: by its route, else by MX lookup) with its
envelope, and returns that envelope: the caller adds it to the schedule.  A crash before the
commit loses nothing (the failure is recorded after the DSN is queued, so it is repeated).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from mxbackup.config import Config
from mxbackup.outbound import bounce, dsnpolicy
from mxbackup.queue.envelope import Envelope, Recipient
from mxbackup.queue.spool import Spool
from mxbackup.routes import table_for as route_table
from mxbackup.stats import Stats
from mxbackup.wire.contract import Outcome

log = Logger(namespace="mxbackup.scheduler")  # its lines were the scheduler's: kept as they are
HEADERS_READ = 256 * 1024  # octets of the original read for its header section


class DsnQueue:
    def __init__(self, spool: Spool, config: Config, stats: Stats) -> None:
        self.spool, self.stats = spool, stats
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        self.hostname = config.server.hostname
        self.routes = route_table(config)

    @defer.inlineCallbacks
    def notify(
        self, envelope: Envelope, rcpts: list[tuple[Recipient, Outcome]], now: float, action: str
    ) -> Any:
        """Queue the DSN (``action``: "failed", "delayed" or "relayed") for those of ``rcpts``
        of ``envelope`` whose NOTIFY asks for it (``dsnpolicy``).  Fires with the DSN's
        envelope once it is committed, or None when none is due (no recipient asks for it,
        null sender, auto-submitted original)."""
        rcpts = dsnpolicy.select(rcpts, action)  # what each recipient's NOTIFY asked for
        if not rcpts:
            log.info("no DSN for id={id}: NOTIFY does not ask for it", id=envelope.id)
            return None
        full = dsnpolicy.returns_full(envelope, action)
        original = self.spool.read_message(envelope.id, -1 if full else HEADERS_READ)
        headers = bounce.header_block(original)
        if not bounce.should_notify(envelope, headers):
            log.info("no DSN for id={id}: null sender or auto-submitted", id=envelope.id)
            return None
        returned = original if full else headers
        data = bounce.build_dsn(envelope, rcpts, self.hostname, returned, now, action, full)
        incoming = self.spool.incoming()
        incoming.write(data)
        sender_route = self.routes.lookup(envelope.sender.rpartition("@")[2])
        params: dict[str, str | None] = {}
        if not data.isascii():
            params["BODY"] = "8BITMIME"
        if bounce.is_global(envelope, rcpts, returned):
            params["SMTPUTF8"] = None  # RFC 6533: the DSN is itself SMTPUTF8 mail
        dsn = Envelope(
            id=incoming.id,
            sender="",
            recipients=[Recipient(envelope.sender, sender_route.domain if sender_route else None)],
            received_at=now,
            size=len(data),
            client_ip="",
            helo=self.hostname,
            params=params,
        )
        yield self.spool.commit(incoming, dsn)
        self.stats.dsn_sent += 1
        log.info(
            "dsn id={dsn} for id={id} action={action} to=<{to}> rcpts={rcpts}",
            dsn=dsn.id,
            id=envelope.id,
            action=action,
            to=envelope.sender,
            rcpts=",".join(r.address for r, _ in rcpts),
        )
        return dsn
