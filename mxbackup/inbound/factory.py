"""The listening side: one ``SMTPServer`` per connection, the connection limits, and the
current ``policy.Policy`` (replaced on reload).  The top of the inbound layers: it imports the
server, nothing in ``inbound`` imports it (the server sees it as ``session.FactoryView``)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

from twisted.internet import interfaces, protocol
from twisted.logger import Logger

from mxbackup import replies
from mxbackup.checks.env import CheckEnv
from mxbackup.config import Config
from mxbackup.inbound.authlimit import AuthFailures
from mxbackup.inbound.policy import Policy
from mxbackup.inbound.rcpt.services import RcptServices
from mxbackup.inbound.server import SMTPServer
from mxbackup.inbound.session import PasswordCheck, QueueFlusher
from mxbackup.queue.envelope import Envelope
from mxbackup.queue.spool import Spool
from mxbackup.replies import Reply
from mxbackup.stats import Stats

log = Logger(namespace="mxbackup.smtp_in")


class SMTPFactory(protocol.ServerFactory):
    """Builds one ``SMTPServer`` per connection and enforces the connection limits.

    (Its class name is in Twisted's "SMTPFactory starting on PORT" line, which the tests and
    operators look for.)"""

    def __init__(
        self,
        config: Config,
        spool: Spool,
        clock: interfaces.IReactorTime,
        check_password: PasswordCheck,
        tls_context: Any = None,
        wakeup: Callable[[Envelope], None] = lambda envelope: None,
        stats: Stats | None = None,
        etrn: QueueFlusher | None = None,
        seen: Callable[[str], None] = lambda ip: None,
        rcpt: RcptServices | None = None,
        checks: CheckEnv | None = None,
    ) -> None:
        self.stats = stats or Stats()
        self.rcpt = rcpt  # the RCPT links' outside world (verification, target view)
        self.checks_env = checks or CheckEnv(clock=clock, stats=self.stats)
        self.policy = Policy(config, rcpt, self.checks_env)
        self.spool = spool
        self.clock = clock
        self.check_password = check_password
        server_config = config.server
        self.auth_failures = AuthFailures(
            clock, server_config.auth_failure_limit, server_config.auth_failure_window
        )
        self.tls_context = tls_context
        self.wakeup = wakeup
        self.etrn = etrn
        self.seen = seen  # each client's address: one of a down target's is a sign of life
        self.connections = 0
        self.per_ip: Counter[str] = Counter()

    def reconfigure(self, config: Config) -> None:
        self.policy = Policy(config, self.rcpt, self.checks_env)
        limits = (config.server.auth_failure_limit, config.server.auth_failure_window)
        if limits != (self.auth_failures.limit, self.auth_failures.window):
            self.auth_failures.reconfigure(*limits)

    def buildProtocol(self, addr: Any) -> protocol.Protocol:
        server = self.policy.server
        ip = addr.host if hasattr(addr, "host") else str(addr)  # (str(): a costly repr)
        try:
            self.seen(ip)
        except Exception:  # noqa: BLE001 - never a reason to refuse a client
            log.failure("sign of life from {ip} not recorded", ip=ip)
        if self.connections >= server.max_connections:
            log.info("refused connection client={ip}: too many connections", ip=ip)
            return Refuse(replies.TOO_MANY_CONNECTIONS)
        if self.per_ip[ip] >= server.max_connections_per_ip:
            log.info("refused connection client={ip}: too many from this address", ip=ip)
            return Refuse(replies.TOO_MANY_FROM_IP)
        return SMTPServer(self)

    def opened(self, ip: str) -> None:
        self.connections += 1
        self.per_ip[ip] += 1

    def closed(self, ip: str) -> None:
        self.connections -= 1
        self.per_ip[ip] -= 1
        if self.per_ip[ip] <= 0:
            del self.per_ip[ip]


class Refuse(protocol.Protocol):
    """Says why (421) and closes: the connection limits."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply

    def connectionMade(self) -> None:
        self.transport.write(self.reply.line() + b"\r\n")
        self.transport.loseConnection()
