"""Delivery status notifications (RFC 3464), built with the ``email`` package.

Pure: no reactor, no I/O.  A DSN goes from ``<>`` to the original sender; never to ``<>``,
never for auto-submitted mail (RFC 3834), so bounces cannot loop.
"""

from __future__ import annotations

import email.policy
from collections.abc import Iterable
from datetime import UTC, datetime
from email.message import EmailMessage, Message
from email.parser import BytesHeaderParser
from email.utils import format_datetime, make_msgid

from mxbackup.queue.envelope import Envelope, Recipient
from mxbackup.wire.contract import Outcome

_POLICY = email.policy.SMTP.clone(max_line_length=998)


def should_notify(envelope: Envelope, headers: bytes) -> bool:
    """False for the null sender and for auto-submitted mail (no bounce loops)."""
    if not envelope.sender:
        return False
    parsed = BytesHeaderParser(policy=email.policy.compat32).parsebytes(headers)
    auto = (parsed.get("Auto-Submitted") or "no").strip().lower()
    return auto.startswith("no")


def header_block(message: bytes) -> bytes:
    """The original message's header section (without our own Received line's concerns)."""
    end = message.find(b"\r\n\r\n")
    return message if end < 0 else message[: end + 2]


def build_dsn(
    envelope: Envelope,
    failures: Iterable[tuple[Recipient, Outcome]],
    reporting_mta: str,
    original_headers: bytes,
    now: float,
    action: str = "failed",
) -> bytes:
    """The DSN as wire bytes (CRLF).  ``action`` is "failed" or "delayed"."""
    failures = list(failures)
    when = format_datetime(datetime.fromtimestamp(now, UTC))
    msg = EmailMessage(policy=_POLICY)
    msg["From"] = f"Mail Delivery System <MAILER-DAEMON@{reporting_mta}>"
    msg["To"] = envelope.sender
    msg["Subject"] = (
        "Undelivered Mail Returned to Sender"
        if action == "failed"
        else "Delayed Mail (still being retried)"
    )
    msg["Date"] = when
    msg["Message-ID"] = make_msgid(domain=reporting_mta)
    msg["Auto-Submitted"] = "auto-replied"
    msg["MIME-Version"] = "1.0"
    msg.set_type("multipart/report")
    msg.set_param("report-type", "delivery-status")
    msg.set_boundary(f"{envelope.id}.{int(now)}/{reporting_mta}")

    human = EmailMessage(policy=_POLICY)
    human.set_content(_explanation(envelope, failures, reporting_mta, action))
    human["Content-Description"] = "Notification"

    status = Message(policy=_POLICY)
    status.set_type("message/delivery-status")
    status["Content-Description"] = "Delivery report"
    per_message = Message(policy=_POLICY)
    per_message["Reporting-MTA"] = f"dns; {reporting_mta}"
    per_message["X-Queue-ID"] = envelope.id
    per_message["Arrival-Date"] = format_datetime(datetime.fromtimestamp(envelope.received_at, UTC))
    if envelope.params.get("ENVID"):
        per_message["Original-Envelope-Id"] = str(envelope.params["ENVID"])
    blocks = [per_message]
    for rcpt, outcome in failures:
        block = Message(policy=_POLICY)
        if rcpt.params.get("ORCPT"):
            block["Original-Recipient"] = str(rcpt.params["ORCPT"])
        block["Final-Recipient"] = f"rfc822; {rcpt.address}"
        block["Action"] = action
        block["Status"] = _status(outcome, action)
        if outcome.remote:
            block["Remote-MTA"] = f"dns; {_host_of(outcome.remote)}"
        if outcome.code:
            block["Diagnostic-Code"] = f"smtp; {outcome.reply}"
        else:
            block["Diagnostic-Code"] = f"X-mxbackup; {outcome.text}"
        block["Last-Attempt-Date"] = when
        blocks.append(block)
    status.set_payload(blocks)

    headers = EmailMessage(policy=_POLICY)
    headers.set_type("text/rfc822-headers")
    headers["Content-Description"] = "Undelivered Message Headers"
    headers.set_payload(original_headers.decode("ascii", "replace").replace("\ufffd", "?"))

    msg.set_payload([human, status, headers])
    return msg.as_bytes(policy=_POLICY)


def _status(outcome: Outcome, action: str) -> str:
    status = outcome.status()
    if action == "failed" and not status.startswith("5"):
        # Ran out of retries or lifetime on a temporary error: delivery time expired.
        return "5.4.7"
    if action == "delayed" and not status.startswith("4"):
        return "4.4.7"
    return status


def _explanation(
    envelope: Envelope,
    failures: list[tuple[Recipient, Outcome]],
    reporting_mta: str,
    action: str,
) -> str:
    lines = [f"This is the mail system at host {reporting_mta}.", ""]
    if action == "failed":
        lines += [
            "I'm sorry to have to inform you that your message could not be delivered to one",
            "or more recipients. The headers of your message are attached below.",
        ]
    else:
        lines += [
            "Your message could not be delivered yet to one or more recipients.",
            "It is still in the queue and delivery will be retried; you need not resend it.",
        ]
    lines.append("")
    for rcpt, outcome in failures:
        lines.append(f"<{rcpt.address}>: {outcome.reply} (after {rcpt.attempts} attempt(s))")
    return "\n".join(lines) + "\n"


def _host_of(remote: str) -> str:
    """``name[ip]:port`` or ``[ip]:port`` -> the name, else the address."""
    name, _, rest = remote.partition("[")
    return name or rest.split("]", 1)[0]
