"""What goes on MAIL and RCPT for a job, given what the target offers, and what it cannot
take at all.

Pure: no reactor, no I/O.

- ``SIZE=`` and ``BODY=8BITMIME`` when offered (pitfall 13); ``SMTPUTF8`` when the sender
  asked for it and the target offers it (RFC 6531 3.4).
- The DSN parameters (RFC 3461 4): ``RET=``/``ENVID=`` on MAIL, ``NOTIFY=``/``ORCPT=`` on RCPT,
  only to a target that offers ``DSN`` (never to one that does not: it would refuse them
  with 555).  Then the target takes over the duty to notify; otherwise we keep it
  (``mxbackup.outbound.dsnpolicy``).
- SMTPUTF8 to a target that does not offer it: only what truly needs UTF-8 is refused, an
  envelope address with a non-ASCII local part (RFC 6531 3.2: the sender's, or that
  recipient's; such an address cannot be written in the plain protocol).  An address whose
  local part is ASCII and whose domain has U-labels is sent with the domain's A-labels
  (``info@xn--bcher-kva.example``: the same mailbox, RFC 5890; Postfix does the same).
  Those recipients fail for good with
  5.6.7 (RFC 6531 3.2 / RFC 5248); the others go, without the ``SMTPUTF8`` parameter, even
  when the header section has UTF-8 in it (RFC 6532 header fields alone do not make the
  envelope need SMTPUTF8; Postfix sends such mail on too, and only bounces for a UTF-8
  envelope address).  An ORCPT or ENVID with UTF-8 in it is sent in its ASCII form
  (RFC 6533 3: ``\\x{HEX}`` in a utf-8 address, xtext ``+HH`` otherwise).
"""

from __future__ import annotations

from collections.abc import Mapping

from mxbackup.names import lookup_form
from mxbackup.wire.contract import Job, Outcome

Extensions = Mapping[bytes, bytes | None]

SMTPUTF8_REQUIRED = "5.6.7 SMTPUTF8 is required, but was not offered by host {}"
EIGHT_BIT_REFUSED = (
    "5.6.3 message has 8-bit content, but host {} does not offer 8BITMIME "
    "and this route does not allow conversion to 7 bit"
)


def needs_utf8(address: str) -> bool:
    """``address`` cannot be written without SMTPUTF8: its local part is not ASCII, or its
    domain is not a valid IDNA name (so it has no A-label form)."""
    return ascii_form(address) is None


def ascii_form(address: str) -> str | None:
    """``address`` as plain SMTP can carry it (domain in A-labels), or None."""
    if address.isascii():
        return address
    local, _, domain = address.rpartition("@")
    if not local.isascii():
        return None
    domain_form = lookup_form(domain)
    return None if domain_form is None else local + "@" + domain_form


def on_wire(address: str, utf8: bool) -> bytes:
    """``address`` for MAIL or RCPT: as queued when SMTPUTF8 is passed, else its ASCII form
    (``utf8_refused`` has kept back what has none)."""
    return address.encode() if utf8 else (ascii_form(address) or address).encode()


def utf8_refused(job: Job, extensions: Extensions, remote: str) -> dict[str, Outcome]:
    """The recipients this target cannot take for want of SMTPUTF8: all of them when the
    sender's address needs it, else those whose own address does."""
    if b"SMTPUTF8" in extensions:
        return {}
    refused = Outcome("permfail", 0, SMTPUTF8_REQUIRED.format(remote), remote)
    if needs_utf8(job.sender):
        return dict.fromkeys(job.recipients, refused)
    return {r: refused for r in job.recipients if needs_utf8(r)}


def eight_bit_refused(job: Job, remote: str) -> dict[str, Outcome]:
    refused = Outcome("permfail", 0, EIGHT_BIT_REFUSED.format(remote), remote)
    return dict.fromkeys(job.recipients, refused)


def utf8_passed(job: Job, extensions: Extensions) -> bool:
    return job.smtputf8 and b"SMTPUTF8" in extensions


def needs_7bit(job: Job, extensions: Extensions) -> bool:
    """The message may have 8-bit octets and the target takes none (RFC 6152 3): it must be
    looked at, and converted or refused.  SMTPUTF8 passed on implies 8-bit (RFC 6531 3.1)."""
    eight = job.eight_bit or job.smtputf8
    return eight and b"8BITMIME" not in extensions and not utf8_passed(job, extensions)


def mail_command(job: Job, extensions: Extensions, converted: bool = False) -> bytes:
    params = b""
    if b"SIZE" in extensions:
        params += b" SIZE=%d" % job.size
    if (job.eight_bit or job.smtputf8) and not converted and b"8BITMIME" in extensions:
        params += b" BODY=8BITMIME"
    utf8 = utf8_passed(job, extensions)
    if utf8:
        params += b" SMTPUTF8"
    if b"DSN" in extensions:
        if job.ret:
            params += b" RET=" + job.ret.encode()
        if job.envid:
            params += b" ENVID=" + _xtext_ascii(job.envid, utf8).encode()
    return b"MAIL FROM:<" + on_wire(job.sender, utf8) + b">" + params


def rcpt_commands(job: Job, extensions: Extensions) -> list[bytes]:
    dsn = b"DSN" in extensions
    utf8 = utf8_passed(job, extensions)
    lines = []
    for i, rcpt in enumerate(job.recipients):
        line = b"RCPT TO:<" + on_wire(rcpt, utf8) + b">"
        if dsn:
            notify, orcpt = job.rcpt_params(i)
            if notify:
                line += b" NOTIFY=" + notify.encode()
            if orcpt:
                line += b" ORCPT=" + orcpt_ascii(orcpt, utf8).encode()
        lines.append(line)
    return lines


def orcpt_ascii(orcpt: str, utf8: bool) -> str:
    """ORCPT as the target may read it: as received when SMTPUTF8 is passed or it is ASCII;
    otherwise a utf-8 address in its utf-8-addr-xtext form (RFC 6533 3), anything else
    xtext-encoded octet by octet."""
    if utf8 or orcpt.isascii():
        return orcpt
    kind, _, value = orcpt.partition(";")
    if kind.strip().lower() == "utf-8":
        return kind + ";" + "".join(c if c.isascii() else f"\\x{{{ord(c):X}}}" for c in value)
    return kind + ";" + _xtext_ascii(value, False)


def _xtext_ascii(value: str, utf8: bool) -> str:
    if utf8 or value.isascii():
        return value
    return "".join(c if c.isascii() else "".join(f"+{b:02X}" for b in c.encode()) for c in value)
