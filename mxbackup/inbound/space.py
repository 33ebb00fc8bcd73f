"""MAIL-time check: the spool has room for the declared size (``SIZE=``) plus the reserve
``server.min_free_space``.  A failed look at the disk is a local problem: 451, never 5xx."""

from __future__ import annotations

from collections.abc import Mapping

from twisted.logger import Logger

from mxbackup import replies
from mxbackup.config import ServerConfig
from mxbackup.inbound.rcpt.decision import ACCEPT, Decision
from mxbackup.queue.spool import Spool

log = Logger(namespace="mxbackup.smtp_in")


def room_for(spool: Spool, server: ServerConfig, params: Mapping[str, str | None]) -> Decision:
    needed = server.min_free_space + int(params.get("SIZE") or 0)
    try:
        free = spool.free_space(at_least=needed)
    except OSError:
        return replies.LOCAL_ERROR
    if free < needed:
        log.warn("spool low on space: {free} octets free", free=free)
        return replies.INSUFFICIENT_SPACE
    return ACCEPT
