"""One mail transaction: what MAIL begins, RCPT adds to, and the RCPT chain and DATA ask about.

The bottom of the inbound layers: it knows addresses and the queue's ``Recipient``, nothing of
the session or the checks."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mxbackup.inbound.address import Mailbox
from mxbackup.names import lookup_form
from mxbackup.queue.envelope import Recipient


@dataclass(slots=True)
class Transaction:
    """One mail transaction, from MAIL to the end of data or RSET: what the checks ask about."""

    client_ip: str
    helo: str | None
    authenticated: bool
    sender: Mailbox | None  # None: the null reverse-path <>
    params: dict[str, str | None]
    recipients: list[Recipient] = field(default_factory=list)
    results: dict[str, Any] = field(default_factory=dict)  # the checks' (SPF at MAIL)
    _seen: set[str] = field(default_factory=set)
    chunked: bool = False  # a BDAT chunk was taken: DATA is refused (RFC 3030 2)

    @property
    def utf8(self) -> bool:
        """MAIL carried SMTPUTF8 (RFC 6531): UTF-8 addresses are allowed."""
        return "SMTPUTF8" in self.params

    @property
    def sender_text(self) -> str:
        return "" if self.sender is None else str(self.sender)

    def add(self, recipient: Recipient) -> None:
        """A repeated recipient is kept once: compared without case, the domain in its lookup
        form (``ü@bücher.example`` and ``ü@xn--bcher-kva.example`` are one mailbox)."""
        local, _, domain = recipient.address.rpartition("@")
        key = local.lower() + "@" + (lookup_form(domain) or domain.lower())
        if key not in self._seen:
            self._seen.add(key)
            self.recipients.append(recipient)
