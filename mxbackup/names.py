"""Domain names: the one parser that the configuration, SMTP paths and ETRN share.

Pure: no reactor.  A name is checked label by label (RFC 1035 2.3.4 / RFC 5321 4.1.2): letters,
digits and hyphens, no hyphen at either end of a label, at most 63 octets a label and 253 a
name.  What differs between callers (a wildcard "*." first label, a trailing dot, U-labels,
an all-digit last label) is a keyword of ``parse_domain``; the result is always lower case
with no trailing dot.
"""

from __future__ import annotations

import re

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
        try:
            name = name.encode("idna").decode("ascii")
        except UnicodeError:
            raise DomainError("not a valid internationalised domain name") from None
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
