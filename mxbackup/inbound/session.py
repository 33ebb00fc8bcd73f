"""What the command collaborators (``basic``, ``mailrcpt``, ``message``, ``chunking``,
``starttls``, ``sasl``, ``etrn``) use of the session, and what the session uses of its factory,
as ``typing.Protocol``s.

The collaborators are typed against ``Session``, never against ``server.SMTPServer``: the
server imports them, so they must not import it.  ``SMTPServer`` provides ``Session`` and
``factory.SMTPFactory`` provides ``FactoryView`` structurally (no inheritance, no registration).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred

if TYPE_CHECKING:
    from twisted.internet.interfaces import IReactorTime

    from mxbackup.inbound.address import Mailbox
    from mxbackup.inbound.authlimit import AuthFailures
    from mxbackup.inbound.policy import Policy
    from mxbackup.inbound.rcpt.decision import Decision, Postpone
    from mxbackup.inbound.transaction import Transaction
    from mxbackup.queue.envelope import Envelope, Recipient
    from mxbackup.queue.spool import Spool
    from mxbackup.replies import Reply
    from mxbackup.stats import Stats

Result = Deferred[Any] | None  # a command's answer: None when it has replied already
OnLine = Callable[[bytes], Result]
PasswordCheck = Callable[[str, str], Deferred]


class Stream(Protocol):
    """What reads the DATA phase or a BDAT chunk: ``feed`` consumes a prefix of the input and
    says whether the end was reached; ``end`` then answers; ``abort`` drops it (connection
    lost, timeout)."""

    def feed(self, data: bytes) -> tuple[int, bool]: ...

    def end(self) -> Result: ...

    def abort(self) -> None: ...


class QueueFlusher(Protocol):
    """What ETRN needs of the queue (the scheduler provides it; injected, not imported)."""

    def keys_for_domain(self, domain: str) -> list[str]: ...

    def flush(self, key: str | None = None) -> int: ...


class FactoryView(Protocol):
    """What the session and its commands use of the factory that built it."""

    policy: Policy
    spool: Spool
    clock: IReactorTime
    stats: Stats
    tls_context: Any
    check_password: PasswordCheck
    auth_failures: AuthFailures
    wakeup: Callable[[Envelope], None]
    etrn: QueueFlusher | None

    def opened(self, ip: str) -> None: ...

    def closed(self, ip: str) -> None: ...


class Offered(Protocol):
    """EHLO's question to AUTH: is it offered to this client now?"""

    def offered(self) -> bool: ...


class Allowed(Protocol):
    """EHLO's question to ETRN: may this client use it?"""

    def allowed(self) -> bool: ...


class Session(Protocol):
    """One client's connection, as its commands see it: its state, its replies, its input."""

    factory: FactoryView
    transport: Any
    client_ip: str
    helo: str | None
    tls: bool
    can_start_tls: bool
    authenticated: bool
    auth_user: str | None
    transaction: Transaction | None
    sasl: Offered
    etrn: Allowed

    @property
    def policy(self) -> Policy: ...

    # the seam: policy decides MAIL and RCPT
    def validateFrom(self, transaction: Transaction) -> Decision | Deferred[Decision]: ...

    def validateTo(self, mailbox: Mailbox) -> Recipient | Reply | Postpone | Deferred[Any]: ...

    # replies
    def reply(self, reply: Reply) -> None: ...

    def send_lines(self, code: int, lines: list[str]) -> None: ...

    def error(self, reply: Reply) -> None: ...

    def clear_errors(self) -> None: ...

    def close_with(self, reply: Reply) -> None: ...

    # input
    def read_commands(self) -> None: ...

    def read_lines(self, limit: int, on_line: OnLine, too_long: Callable[[], None]) -> None: ...

    def read_stream(self, stream: Stream) -> None: ...

    def discard_input(self) -> None: ...

    def resetTimeout(self) -> None: ...  # (TimeoutMixin's) input arrived that is not lines
