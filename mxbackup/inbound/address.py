"""Parsing and vetting of SMTP paths (RFC 5321 section 4.1.2) and their ESMTP parameters.

Pure: no reactor.  Twisted's ``Address`` keeps ``%`` and ``!`` in local parts and silently
strips source routes; here every path is parsed strictly and anything that could carry its
own routing is reported, so the policy can refuse it for relaying.

SMTPUTF8 (RFC 6531 3.3): with ``utf8`` a local part may hold UTF-8 characters (atext and
qtext gain ``UTF8-non-ascii``) and the domain U-labels (IDNA 2008, ``names``).  The address is
kept as sent; ``Mailbox.ace_domain`` is its domain in A-label form, which routes and address
lists are matched on.  The routing rules hold for UTF-8 too: the local part is also read in its
NFKC form, so a fullwidth or small ``@``, ``%`` or ``!`` (which a later system might fold to the
ASCII one) counts as that character; controls, format characters (bidi overrides, zero-width
joiners), separators and unassigned code points are refused; octets that are not UTF-8 are a
syntax error, never a traceback.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

from mxbackup.names import DomainError, parse_domain

# RFC 5321 atext and the printable characters of a quoted string.
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"\Z')
_UTEXT = r"(?:[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]|[^\x00-\x7f])"  # RFC 6531: atext =/ UTF8-non-ascii
_DOT_ATOM_UTF8 = re.compile(rf"{_UTEXT}+(?:\.{_UTEXT}+)*\Z")
_QUOTED_UTF8 = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|[^\x00-\x7f]|\\[\x20-\x7e])*"\Z')
_NOT_UTF8 = re.compile("[\udc80-\udcff]")  # what surrogateescape made of non-UTF-8 octets
_REFUSED_CATEGORIES = ("C", "Z")  # controls, format, surrogates, private use, unassigned; spaces
_PARAM_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_PARAM_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e]+\Z")  # esmtp-value: no "=", SP or controls
_PARAM_VALUE_UTF8 = re.compile(r"(?:[\x21-\x3c\x3e-\x7e]|[^\x00-\x7f\udc80-\udcff])+\Z")
_LITERAL = re.compile(r"\[[\x21-\x5a\x5e-\x7e]+\]\Z")  # dcontent (RFC 5321 4.1.3)


class PathError(ValueError):
    """The path is malformed.  ``kind`` says which refusal fits: "syntax", "utf8" (non-ASCII
    without SMTPUTF8) or "repeat" (a parameter given twice)."""

    def __init__(self, reason: str, kind: str = "syntax") -> None:
        super().__init__(reason)
        self.kind = kind


@dataclass(frozen=True)
class Mailbox:
    local: str  # as sent (quoted form kept), case preserved
    domain: str  # lower case, as sent (U-labels kept)
    routing: str | None = None  # why this address carries its own routing, if it does
    ace_domain: str = ""  # the domain with A-labels ("" when it is ``domain``)

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"

    @property
    def lookup_domain(self) -> str:
        """The domain as routes and address lists are matched on it (A-labels)."""
        return self.ace_domain or self.domain

    @property
    def lookup_address(self) -> str:
        return f"{self.local}@{self.lookup_domain}"


def split_command_argument(arg: str, keyword: str) -> tuple[str, str]:
    """Split ``FROM:<path> params`` into the path (with brackets) and the parameter string.

    Liberal in one way only: spaces after the colon are accepted (many clients send them).
    """
    if arg[: len(keyword)].upper() != keyword:
        raise PathError(f"expected {keyword}")
    rest = arg[len(keyword) :].lstrip(" ")
    if not rest.startswith("<"):
        # A bare address without brackets is not RFC 5321; accept it like Postfix does.
        path, _, params = rest.partition(" ")
        return f"<{path}>", params
    depth_end = _find_path_end(rest)
    if depth_end < 0:
        raise PathError("unbalanced <>")
    return rest[: depth_end + 1], rest[depth_end + 1 :]


def _find_path_end(s: str) -> int:
    """Index of the ``>`` closing the path, skipping quoted strings."""
    in_quote = False
    escaped = False
    for i, ch in enumerate(s):
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            in_quote = not in_quote
        elif ch == ">" and not in_quote:
            return i
    return -1


def parse_params(text: str, utf8: bool = False) -> dict[str, str | None]:
    """``KEY[=value]`` items; ``utf8`` (SMTPUTF8, RFC 6531 3.3): values may hold UTF-8.  A
    repeated key is a PathError of kind "repeat" whose text is the key."""
    params: dict[str, str | None] = {}
    value_form = _PARAM_VALUE_UTF8 if utf8 else _PARAM_VALUE
    for item in text.split(" "):
        if not item:
            continue
        key, eq, value = item.partition("=")
        if not _PARAM_KEY.match(key) or (eq and not value_form.match(value)):
            raise PathError(f"bad parameter {item!r}")
        key = key.upper()
        if key in params:
            raise PathError(key, kind="repeat")
        params[key] = value if eq else None
    return params


def parse_path(bracketed: str, allow_null: bool, utf8: bool = False) -> Mailbox | None:
    """Parse ``<...>``; return None for ``<>``.  Raise PathError when malformed.  ``utf8``:
    the transaction has SMTPUTF8, so UTF-8 local parts and U-label domains are allowed."""
    if not (bracketed.startswith("<") and bracketed.endswith(">")):
        raise PathError("path must be enclosed in <>")
    inner = bracketed[1:-1]
    if not inner.isascii():
        if not utf8:
            raise PathError("non-ASCII address", kind="utf8")
        _check_characters(inner)
    if inner == "":
        if allow_null:
            return None
        raise PathError("empty path")
    inner, routing = _without_source_route(inner)
    local, domain = _split_mailbox(inner, utf8)
    domain, ace, literal = _checked_domain(domain)
    if len(local.encode("utf-8")) > 64:
        raise PathError("local part longer than 64 octets")
    return Mailbox(local, domain, routing or literal or _routing_in_local(local), ace)


def _check_characters(inner: str) -> None:
    if _NOT_UTF8.search(inner):
        raise PathError("invalid UTF-8")
    for ch in inner:
        if not ch.isascii() and unicodedata.category(ch)[0] in _REFUSED_CATEGORIES:
            raise PathError(f"character U+{ord(ch):04X} not allowed in an address")


def _without_source_route(inner: str) -> tuple[str, str | None]:
    """A-d-l source route: "@hostA,@hostB:user@domain" (RFC 5321 obsolete syntax)."""
    if not inner.startswith("@"):
        return inner, None
    _route, colon, rest = inner.partition(":")
    if not colon:
        raise PathError("malformed source route")
    return rest, "source route"


def _checked_domain(domain: str) -> tuple[str, str, str | None]:
    """The domain in lower case, its A-label form if that differs (else ""), and "address
    literal" if it is one."""
    if domain.startswith("["):
        if not _LITERAL.match(domain):
            raise PathError("malformed address literal")
        return domain, "", "address literal"
    domain = domain.lower()
    if domain.endswith("."):
        raise PathError("domain ends with a dot")
    try:
        ace = parse_domain(domain, trailing_dot=False, idna=True)
    except DomainError:
        raise PathError("malformed domain") from None
    return domain, ("" if ace == domain else ace), None


def _split_mailbox(inner: str, utf8: bool = False) -> tuple[str, str]:
    quoted, dot_atom = (_QUOTED_UTF8, _DOT_ATOM_UTF8) if utf8 else (_QUOTED, _DOT_ATOM)
    if inner.startswith('"'):
        end = _closing_quote(inner)
        local, rest = inner[: end + 1], inner[end + 1 :]
        if not quoted.match(local):
            raise PathError("malformed quoted local part")
        if dot_atom.match(local[1:-1]):
            local = local[1:-1]  # "alice"@x is alice@x (RFC 5321 4.1.2: same mailbox)
        if not rest.startswith("@"):
            raise PathError("missing @domain")
        domain = rest[1:]
    else:
        local, at, domain = inner.rpartition("@")
        if not at:
            raise PathError("missing @domain")
        if not dot_atom.match(local):
            if "@" in local:
                raise PathError("more than one @")
            raise PathError("malformed local part")
    if "@" in domain or not domain:
        raise PathError("malformed domain")
    return local, domain


def _closing_quote(s: str) -> int:
    escaped = False
    for i in range(1, len(s)):
        ch = s[i]
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == '"':
            return i
    raise PathError("unterminated quoted string")


def _routing_in_local(local: str) -> str | None:
    """Name the routing trick a local part carries, if any (percent hack, bang path, ...);
    a UTF-8 local part is judged in its NFKC form (fullwidth ``＠％！`` are ``@%!``)."""
    if not local.isascii():
        folded = unicodedata.normalize("NFKC", local)
        for ch in '@%!\\"':
            if ch in folded and ch not in local:
                return f"look-alike {ch}"
    if local.startswith('"'):
        body = local[1:-1]
        if "\\" in body:
            return "backslash escape in quoted local part"
        for ch, what in (("@", "quoted @"), ("%", "percent hack"), ("!", "bang path")):
            if ch in body:
                return what
        return None
    if "%" in local:
        return "percent hack"
    if "!" in local:
        return "bang path"
    return None
