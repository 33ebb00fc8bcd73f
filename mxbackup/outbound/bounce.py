"""Delivery status notifications (RFC 3464), built with the ``email`` package.

Pure: no reactor, no I/O.  A DSN goes from ``<>`` to the original sender; never to ``<>``,
never for auto-submitted mail (RFC 3834), so bounces cannot loop.
"""

from __future__ import annotations

import email.policy
import re
from collections.abc import Iterable
from datetime import UTC, datetime
from email.parser import BytesHeaderParser
from email.utils import format_datetime, make_msgid

from mxbackup.queue.envelope import Envelope, Recipient
from mxbackup.wire.contract import Outcome


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
    original: bytes,
    now: float,
    action: str = "failed",
    full: bool = False,
) -> bytes:
    """The DSN as wire bytes (CRLF).  ``action`` is "failed", "delayed" or "relayed" (RFC 3464
    2.3.3).  ``original``: the returned message's header section, or the whole message when
    ``full`` (RET=FULL, RFC 3461 4.3).

    In SMTPUTF8 form (RFC 6533) when an address in it needs UTF-8 (the sender's, a reported
    recipient's, an original recipient's), or when the original was SMTPUTF8 mail with UTF-8
    in its header section: ``message/global-delivery-status`` and ``message/global-headers``
    or ``message/global``, header fields in UTF-8 (RFC 6532).  ``is_global`` says which; such
    a DSN must be queued with the SMTPUTF8 flag (``notify``)."""
    failures = list(failures)
    utf8 = is_global(envelope, failures, original)
    when = format_datetime(datetime.fromtimestamp(now, UTC))
    boundary = f"{envelope.id}.{int(now)}/{reporting_mta}"
    head = [
        f"From: Mail Delivery System <MAILER-DAEMON@{reporting_mta}>",
        f"To: {envelope.sender}",
        f"Subject: {_SUBJECTS[action]}",
        f"Date: {when}",
        f"Message-ID: {make_msgid(domain=reporting_mta)}",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        f'Content-Type: multipart/report; report-type=delivery-status; boundary="{boundary}"',
    ]
    human = _explanation(envelope, failures, reporting_mta, action)
    parts = [
        _part(
            ["Content-Description: Notification", _text_type(human)],
            human.replace("\n", "\r\n").encode(),
        ),
        _part(
            [
                "Content-Description: Delivery report",
                "Content-Type: message/" + ("global-" if utf8 else "") + "delivery-status",
            ],
            _status_fields(envelope, failures, reporting_mta, action, when).encode(),
        ),
        _returned(original, full, utf8),
    ]
    out = ("\r\n".join(head) + "\r\n\r\nThis is a MIME-encapsulated message.\r\n\r\n").encode()
    for part in parts:
        out += b"--" + boundary.encode() + b"\r\n" + part + b"\r\n"
    return out + b"--" + boundary.encode() + b"--\r\n"


_SUBJECTS = {
    "failed": "Undelivered Mail Returned to Sender",
    "delayed": "Delayed Mail (still being retried)",
    "relayed": "Successful Mail Delivery Report",
}


def is_global(
    envelope: Envelope, failures: list[tuple[Recipient, Outcome]], original: bytes
) -> bool:
    """The DSN needs SMTPUTF8 (RFC 6533): see ``build_dsn``."""
    texts = [envelope.sender, xtext_decode(envelope.params.get("ENVID") or "")]
    for rcpt, _ in failures:
        texts += [rcpt.address, _original_recipient(rcpt.params.get("ORCPT"))]
    if not all(t.isascii() for t in texts):
        return True
    return "SMTPUTF8" in envelope.params and not header_block(original).isascii()


def _part(headers: list[str], body: bytes) -> bytes:
    if not body.isascii():
        headers = [*headers, "Content-Transfer-Encoding: 8bit"]
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


def _text_type(text: str) -> str:
    return "Content-Type: text/plain; charset=" + ("us-ascii" if text.isascii() else "utf-8")


def _status_fields(
    envelope: Envelope,
    failures: list[tuple[Recipient, Outcome]],
    reporting_mta: str,
    action: str,
    when: str,
) -> str:
    per_message = [f"Reporting-MTA: dns; {reporting_mta}", f"X-Queue-ID: {envelope.id}"]
    envid = envelope.params.get("ENVID")
    if envid:
        # RFC 3464 2.2.1 / RFC 3461 4.4: the envelope identifier, decoded from the xtext of
        # the ENVID parameter (Postfix does the same).
        per_message.append(f"Original-Envelope-Id: {xtext_decode(envid)}")
    arrival = format_datetime(datetime.fromtimestamp(envelope.received_at, UTC))
    per_message.append(f"Arrival-Date: {arrival}")
    blocks = ["\r\n".join(per_message)]
    for rcpt, outcome in failures:
        block = []
        orcpt = rcpt.params.get("ORCPT")
        if orcpt:
            # RFC 3464 2.3.1 / RFC 3461 4.2: "addr-type; address", the address decoded from
            # the ORCPT parameter's xtext (RFC 6533 3: a utf-8 address's \x{HEX} too).
            block.append(f"Original-Recipient: {_original_recipient(orcpt)}")
        kind = "rfc822" if rcpt.address.isascii() else "utf-8"  # RFC 6533 3
        block.append(f"Final-Recipient: {kind}; {rcpt.address}")
        block.append(f"Action: {action}")
        block.append(f"Status: {_status(outcome, action)}")
        if outcome.remote:
            block.append(f"Remote-MTA: dns; {_host_of(outcome.remote)}")
        if outcome.code:
            block.append(f"Diagnostic-Code: smtp; {outcome.reply}")
        else:
            block.append(f"Diagnostic-Code: X-mxbackup; {outcome.text}")
        block.append(f"Last-Attempt-Date: {when}")
        blocks.append("\r\n".join(block))
    return "\r\n\r\n".join(blocks) + "\r\n"


def _returned(original: bytes, full: bool, utf8: bool) -> bytes:
    """The returned content (RFC 3462 / RFC 6533): the whole message or its headers."""
    if full:
        kind = "message/global" if utf8 else "message/rfc822"
        return _part(
            [f"Content-Type: {kind}", "Content-Description: Undelivered Message"], original
        )
    headers = header_block(original)
    if utf8:
        kind = "message/global-headers"
    else:
        kind = "text/rfc822-headers"
        headers = headers.decode("ascii", "replace").replace("\ufffd", "?").encode()
    return _part(
        [f"Content-Type: {kind}", "Content-Description: Undelivered Message Headers"], headers
    )


def xtext_decode(value: str) -> str:
    """RFC 3461 4: "+HH" is the octet HH; the octets are read as UTF-8 (RFC 6533)."""
    if "+" not in value:
        return value
    data = re.sub(r"\+([0-9A-Fa-f]{2})", lambda m: chr(int(m.group(1), 16)), value)
    return data.encode("latin-1", "replace").decode("utf-8", "replace")


def _original_recipient(orcpt: str | None) -> str:
    if not orcpt:
        return ""
    kind, _, value = orcpt.partition(";")
    value = xtext_decode(value)
    if kind.strip().lower() == "utf-8":
        value = re.sub(r"\\x\{([0-9A-Fa-f]{1,6})\}", lambda m: chr(int(m.group(1), 16)), value)
    return f"{kind};{value}"


def _status(outcome: Outcome, action: str) -> str:
    status = outcome.status()
    if action == "failed" and not status.startswith("5"):
        # Ran out of retries or lifetime on a temporary error: delivery time expired.
        return "5.4.7"
    if action == "delayed" and not status.startswith("4"):
        return "4.4.7"
    if action == "relayed" and not status.startswith("2"):
        return "2.0.0"
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
            "or more recipients. Your message (or its headers) is attached below.",
        ]
    elif action == "relayed":
        lines += [
            "Your message was successfully relayed to the following destinations; they were",
            "not asked for a delivery notification, so you may get no further notice.",
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
