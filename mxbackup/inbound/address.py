"""Parsing and vetting of SMTP paths (RFC 5321 section 4.1.2) and their ESMTP parameters.

Pure: no reactor.  Twisted's ``Address`` keeps ``%`` and ``!`` in local parts and silently
strips source routes; here every path is parsed strictly and anything that could carry its
own routing is reported, so the policy can refuse it for relaying.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from mxbackup.names import DomainError, parse_domain

# RFC 5321 atext and the printable characters of a quoted string.
_ATEXT = r"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]"
_DOT_ATOM = re.compile(rf"{_ATEXT}+(?:\.{_ATEXT}+)*\Z")
_QUOTED = re.compile(r'"(?:[\x20\x21\x23-\x5b\x5d-\x7e]|\\[\x20-\x7e])*"\Z')
_PARAM_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9-]*\Z")
_PARAM_VALUE = re.compile(r"[\x21-\x3c\x3e-\x7e]+\Z")  # esmtp-value: no "=", SP or controls
_LITERAL = re.compile(r"\[[\x21-\x5a\x5e-\x7e]+\]\Z")  # dcontent (RFC 5321 4.1.3)


class PathError(ValueError):
    """The path is malformed.  ``kind`` says which refusal fits: "syntax" or "utf8"."""

    def __init__(self, reason: str, kind: str = "syntax") -> None:
        super().__init__(reason)
        self.kind = kind


@dataclass(frozen=True)
class Mailbox:
    local: str  # as sent (quoted form kept), case preserved
    domain: str  # lower case
    routing: str | None = None  # why this address carries its own routing, if it does

    def __str__(self) -> str:
        return f"{self.local}@{self.domain}"


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


def parse_params(text: str) -> dict[str, str | None]:
    params: dict[str, str | None] = {}
    for item in text.split():
        key, eq, value = item.partition("=")
        if not _PARAM_KEY.match(key) or (eq and not _PARAM_VALUE.match(value)):
            raise PathError(f"bad parameter {item!r}")
        params[key.upper()] = value if eq else None
    return params


def parse_path(bracketed: str, allow_null: bool) -> Mailbox | None:
    """Parse ``<...>``; return None for ``<>``.  Raise PathError when malformed."""
    if not (bracketed.startswith("<") and bracketed.endswith(">")):
        raise PathError("path must be enclosed in <>")
    inner = bracketed[1:-1]
    if not inner.isascii():
        raise PathError("non-ASCII address", kind="utf8")
    if inner == "":
        if allow_null:
            return None
        raise PathError("empty path")
    inner, routing = _without_source_route(inner)
    local, domain = _split_mailbox(inner)
    domain, literal = _checked_domain(domain)
    if len(local) > 64:
        raise PathError("local part longer than 64 octets")
    return Mailbox(local, domain, routing or literal or _routing_in_local(local))


def _without_source_route(inner: str) -> tuple[str, str | None]:
    """A-d-l source route: "@hostA,@hostB:user@domain" (RFC 5321 obsolete syntax)."""
    if not inner.startswith("@"):
        return inner, None
    _route, colon, rest = inner.partition(":")
    if not colon:
        raise PathError("malformed source route")
    return rest, "source route"


def _checked_domain(domain: str) -> tuple[str, str | None]:
    """The domain in lower case, and "address literal" if it is one."""
    if domain.startswith("["):
        if not _LITERAL.match(domain):
            raise PathError("malformed address literal")
        return domain, "address literal"
    domain = domain.lower()
    if domain.endswith("."):
        raise PathError("domain ends with a dot")
    try:
        parse_domain(domain, trailing_dot=False)
    except DomainError:
        raise PathError("malformed domain") from None
    return domain, None


def _split_mailbox(inner: str) -> tuple[str, str]:
    if inner.startswith('"'):
        end = _closing_quote(inner)
        local, rest = inner[: end + 1], inner[end + 1 :]
        if not _QUOTED.match(local):
            raise PathError("malformed quoted local part")
        if _DOT_ATOM.match(local[1:-1]):
            local = local[1:-1]  # "alice"@x is alice@x (RFC 5321 4.1.2: same mailbox)
        if not rest.startswith("@"):
            raise PathError("missing @domain")
        domain = rest[1:]
    else:
        local, at, domain = inner.rpartition("@")
        if not at:
            raise PathError("missing @domain")
        if not _DOT_ATOM.match(local):
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
    """Name the routing trick a local part carries, if any (percent hack, bang path, ...)."""
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
