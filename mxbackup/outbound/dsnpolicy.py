"""Which notices a recipient's NOTIFY asks for, when the duty to notify is ours.

Pure: no reactor, no I/O.  RFC 3461 4.1: NOTIFY=NEVER asks for none; otherwise a list of
SUCCESS, FAILURE, DELAY; no NOTIFY at all means FAILURE and (at our choice, RFC 3461 4.1)
DELAY.  So:

- "failed": when the recipient's NOTIFY is absent or lists FAILURE.  Failures are always ours
  to report, whether or not the target offered DSN (it refused, or we gave up: RFC 3461 5.2.2
  only hands over what the target accepted).
- "delayed": when NOTIFY is absent or lists DELAY.
- "relayed": when NOTIFY lists SUCCESS and the target that took the message did not offer
  DSN (RFC 3461 5.2.2: the relaying MTA issues the "relayed" DSN; a target that offered DSN
  got NOTIFY from us and answers for it: ``Outcome.notify_passed``).

A DSN is never sent for a DSN (null sender) nor for auto-submitted mail: ``bounce.should_notify``.
RET (RFC 3461 4.3): HDRS returns the header section only; FULL returns the whole message (up to
``FULL_LIMIT`` octets, then the headers only); without RET we return the headers only (the
RFC leaves it to us; less backscatter than Postfix's full return by default).
"""

from __future__ import annotations

from collections.abc import Iterable

from mxbackup.queue.envelope import Envelope, Recipient
from mxbackup.wire.contract import Outcome

FULL_LIMIT = 10 * 1024 * 1024  # octets of original returned with RET=FULL

_WANTS = {"failed": "FAILURE", "delayed": "DELAY", "relayed": "SUCCESS"}


def wants(rcpt: Recipient, action: str) -> bool:
    notify = (rcpt.params.get("NOTIFY") or "").upper()
    if not notify:
        return action != "relayed"
    return _WANTS[action] in notify.split(",")


def select(
    rcpts: Iterable[tuple[Recipient, Outcome]], action: str
) -> list[tuple[Recipient, Outcome]]:
    return [(r, o) for r, o in rcpts if wants(r, action)]


def success_due(rcpt: Recipient, outcome: Outcome) -> bool:
    """A "relayed" DSN is ours for this delivery."""
    return outcome.kind == "delivered" and not outcome.notify_passed and wants(rcpt, "relayed")


def returns_full(envelope: Envelope, action: str) -> bool:
    ret = (envelope.params.get("RET") or "").upper()
    return action == "failed" and ret == "FULL" and envelope.size <= FULL_LIMIT
