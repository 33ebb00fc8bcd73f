"""What a link of the RCPT decision chain answers, and what it is asked about.

Pure: no reactor.  A link's ``decide(transaction, recipient)`` returns ``ACCEPT`` (go on to the
next link), a ``Reply`` (the recipient is refused: logged, counted, an error of the client's),
a ``Postpone`` (not now, through no fault of the client's: answered, nothing more), or a
``Deferred`` of one of these.  Synchronous links return plain values so that the common case
costs no Deferred; the chain wraps only when a link returns one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred

from mxbackup.config import Route
from mxbackup.inbound.address import Mailbox
from mxbackup.queue.envelope import Recipient
from mxbackup.replies import Reply

if TYPE_CHECKING:
    from mxbackup.inbound.transaction import Transaction


@dataclass(frozen=True, slots=True)
class Accept:
    """This link has no objection."""


ACCEPT = Accept()


@dataclass(frozen=True, slots=True)
class Postpone:
    """Not in this transaction, and not the client's fault (RFC 5321 4.5.3.1.10: too many
    recipients): the reply is sent, but it is neither logged as a refusal nor counted as an
    error, so a client sending its recipients in several transactions is not disconnected."""

    reply: Reply


Decision = Accept | Reply | Postpone


@dataclass(frozen=True, slots=True)
class Candidate:
    """The recipient being decided: its strictly parsed mailbox and the route it falls under
    (looked up once, shared by the links)."""

    mailbox: Mailbox
    route: Route | None

    @property
    def address(self) -> str:
        return str(self.mailbox)

    def outcome(self, decision: Decision) -> Recipient | Reply | Postpone:
        """The queue's recipient when the chain accepted, else the refusal as it was."""
        if isinstance(decision, Accept):
            return Recipient(self.address, self.route.domain if self.route is not None else None)
        return decision


class Link(Protocol):
    def decide(
        self, transaction: Transaction, recipient: Candidate
    ) -> Decision | Deferred[Decision]: ...


def when_decided(result: Any, then: Callable[..., None], *args: Any) -> Deferred[None] | None:
    """Call ``then(value, *args)`` now if ``result`` is a value, or when its Deferred fires
    (then the Deferred is returned, so the session holds its command stream until then)."""
    if isinstance(result, Deferred):
        return result.addCallback(then, *args)
    then(result, *args)
    return None
