"""Domain names: the one parser that the configuration, SMTP paths and ETRN share.

Pure: no reactor.  A name is checked label by label (RFC 1035 2.3.4 / RFC 5321 4.1.2): letters,
digits and hyphens, no hyphen at either end of a label, at most 63 octets a label and 253 a
name.  What differs between callers (a wildcard "*." first label, a trailing dot, U-labels,
an all-digit last label) is a keyword of ``parse_domain``; the result is always lower case
with no trailing dot.

Internationalised names follow IDNA 2008 (RFC 5890-5892, the ``idna`` package), not Python's
built-in ``idna`` codec (IDNA 2003, which maps ``ß`` to ``ss`` and accepts symbols): a U-label
must be a valid IDNA 2008 label in NFC; labels are separated by ASCII dots only (a fullwidth or
ideographic full stop is not a separator on the wire).  ``bücher.example`` and
``xn--bcher-kva.example`` are one name: ``a_labels`` turns the first into the second, which is
the form routes and address lists are matched on.
"""

from __future__ import annotations

import ipaddress
import re

import idna as idna2008

_LABEL = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\Z")
MAX_NAME = 253
MAX_LABEL = 63


class DomainError(ValueError):
    """Not a usable domain name; the message says why, in words an operator reads."""


def parse_domain(
    text: str,
    *,
    wildcard: bool = False,
    trailing_dot: bool = True,
    idna: bool = False,
    numeric_tld: bool = True,
) -> str:
    """``text`` as a normalised domain name (lower case, no trailing dot), or DomainError.

    ``wildcard``: a first label of exactly "*" is allowed (``*.example.org``).
    ``trailing_dot``: a final "." (the root) is allowed and dropped.
    ``idna``: non-ASCII labels are turned into A-labels (``xn--...``); otherwise refused.
    ``numeric_tld``: an all-digit last label is allowed (refuse it where an IP address
    written as a name would be a mistake, as in the configuration).
    """
    name = text.lower()
    if trailing_dot:
        name = name.removesuffix(".")
    if not name.isascii():
        if not idna:
            raise DomainError("not ASCII")
        name = a_labels(name)
    if len(name) > MAX_NAME:
        raise DomainError(f"longer than {MAX_NAME} characters")
    labels = name.split(".")
    if wildcard and labels[0] == "*":
        labels = labels[1:]
        if not labels:
            raise DomainError("a wildcard needs a domain after '*.', as in '*.example.org'")
    for label in labels:
        _check_label(label, wildcard)
    if not numeric_tld and labels[-1].isdigit():
        raise DomainError("the last label is all digits (an IP address is not a domain name)")
    return name


def a_labels(name: str) -> str:
    """``name`` (lower case) with each non-ASCII label as its IDNA 2008 A-label, or
    DomainError; ASCII labels are left to the caller's checks."""
    out = []
    for label in name.split("."):
        if not label.isascii():
            try:
                label = idna2008.alabel(label).decode("ascii")
            except (idna2008.IDNAError, UnicodeError, ValueError):
                raise DomainError("not a valid internationalised domain name") from None
        out.append(label)
    return ".".join(out)


def lookup_form(domain: str) -> str | None:
    """The form a domain from the wire or the queue is matched on (lower case, A-labels), or
    None when it has a label that is not a valid U-label."""
    domain = domain.lower()
    if domain.isascii():
        return domain
    try:
        return a_labels(domain)
    except DomainError:
        return None


def _check_label(label: str, wildcard: bool) -> None:
    if "*" in label:
        if not wildcard:
            raise DomainError("wildcards are not allowed here")
        raise DomainError("'*' is only allowed as the whole first label, as in '*.example.org'")
    if not label:
        raise DomainError("empty label (two dots in a row, or a dot at either end)")
    if len(label) > MAX_LABEL:
        raise DomainError(f"label {label!r} is longer than {MAX_LABEL} characters")
    if not _LABEL.match(label):
        raise DomainError(
            f"label {label!r} must be letters, digits and hyphens, "
            "not starting or ending with a hyphen"
        )


def client_address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A client's address as the checks see it: an IPv6 zone ("%eth0") dropped, an
    IPv4-mapped IPv6 address (::ffff:192.0.2.1) as the IPv4 one; None if not an address."""
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    return ip
