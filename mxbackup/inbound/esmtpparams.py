"""The ESMTP parameters of MAIL and RCPT, checked and put in the form the envelope keeps.

Pure: no reactor.  MAIL: SIZE (RFC 1870), BODY (RFC 6152), AUTH (RFC 4954 5: accepted, not
trusted), SMTPUTF8 (RFC 6531, no value), RET and ENVID (RFC 3461).  RCPT: NOTIFY and ORCPT
(RFC 3461; ORCPT's ``utf-8`` address type from RFC 6533).  A parameter we do not know is
``555 5.5.4``; a known one with a bad value (bad syntax, bad xtext, NEVER combined, too long)
is ``501 5.5.4``; a repeated one is refused earlier, by ``address.parse_params``.

What the envelope keeps (the contract with the delivery side): RET upper case; ENVID and
ORCPT exactly as received (still xtext-encoded); NOTIFY as ``NEVER`` or the values given, upper
case, in the order SUCCESS,FAILURE,DELAY; SMTPUTF8 as a key with no value.
"""

from __future__ import annotations

import re

from mxbackup import replies
from mxbackup.replies import Reply

MAX_ENVID = 100  # characters (RFC 3461 4.4)
MAX_ORCPT = 500  # characters (RFC 3461 4.2)
NOTIFY_ORDER = ("SUCCESS", "FAILURE", "DELAY")

# xtext (RFC 3461 4): printable ASCII except "+" and "=", or "+" and two upper-case hex digits.
_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x7e]|\+[0-9A-F]{2})+\Z")
# addr-type: an RFC 822 atom (no specials, space or controls).
_ADDR_TYPE = re.compile(r"[!#-'*+\-/-9=?A-Z^-~]+\Z")
# RFC 6533 3: utf-8-addr-xtext, and with SMTPUTF8 utf-8-addr-unitext (UTF-8 characters too).
_UTF8_ADDR_XTEXT = re.compile(r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x5b\x5d-\x7e]|\\x\{[0-9A-F]{2,6}\})+\Z")
_UTF8_ADDR_UNITEXT = re.compile(
    r"(?:[\x21-\x2a\x2c-\x3c\x3e-\x5b\x5d-\x7e]|[^\x00-\x7f\udc80-\udcff]|\\x\{[0-9A-F]{2,6}\})+\Z"
)

Params = dict[str, str | None]


def mail_params(params: Params, max_size: int) -> tuple[Reply | None, Params]:
    """MAIL's parameters: (the refusal, or None; the parameters as the envelope keeps them)."""
    out = dict(params)
    for key, value in params.items():
        refusal = _mail_param(key, value, max_size)
        if refusal is not None:
            return refusal, out
        if key == "RET":
            out[key] = (value or "").upper()
    return None, out


def _mail_param(key: str, value: str | None, max_size: int) -> Reply | None:
    if key == "SIZE":
        if value is None or not value.isdigit() or len(value) > 20:
            return replies.BAD_PARAMETER.format("SIZE")
        if int(value) > max_size:
            return replies.SIZE_DECLARED_TOO_BIG.format(max_size)
        return None
    if key == "ENVID":
        return _xtext("ENVID", value, MAX_ENVID)
    if key == "AUTH":
        return None
    allowed = _KEYWORD_VALUES.get(key)
    if allowed is None:
        return replies.UNKNOWN_PARAMETER.format(key)
    if (value.upper() if value is not None else None) not in allowed:
        return replies.BAD_PARAMETER.format(key)
    return None


_KEYWORD_VALUES: dict[str, tuple[str | None, ...]] = {
    "BODY": ("7BIT", "8BITMIME"),
    "SMTPUTF8": (None,),  # no value
    "RET": ("FULL", "HDRS"),
}


def rcpt_params(params: Params, utf8: bool) -> tuple[Reply | None, Params]:
    """RCPT's parameters (``utf8``: the transaction has SMTPUTF8): (the refusal, or None; the
    parameters as the envelope keeps them)."""
    out: Params = {}
    for key, value in params.items():
        if key == "NOTIFY":
            refusal, out[key] = _notify(value)
        elif key == "ORCPT":
            refusal, out[key] = _orcpt(value, utf8), value
        else:
            refusal = replies.UNKNOWN_PARAMETER.format(key)
        if refusal is not None:
            return refusal, out
    return None, out


def _notify(value: str | None) -> tuple[Reply | None, str | None]:
    items = (value or "").upper().split(",")
    if items == ["NEVER"]:
        return None, "NEVER"
    if "NEVER" in items:
        return replies.NOTIFY_NEVER_COMBINED, None
    if len(set(items)) != len(items) or not set(items) <= set(NOTIFY_ORDER):
        return replies.BAD_PARAMETER.format("NOTIFY"), None
    return None, ",".join(v for v in NOTIFY_ORDER if v in items)


def _orcpt(value: str | None, utf8: bool) -> Reply | None:
    addr_type, semicolon, address = (value or "").partition(";")
    if not semicolon or not _ADDR_TYPE.match(addr_type):
        return replies.BAD_PARAMETER.format("ORCPT")
    if len(value or "") > MAX_ORCPT:
        return replies.PARAMETER_TOO_LONG.format("ORCPT", MAX_ORCPT)
    if addr_type.lower() == "utf-8":
        if not (_UTF8_ADDR_UNITEXT if utf8 else _UTF8_ADDR_XTEXT).match(address):
            return replies.BAD_XTEXT.format("ORCPT")
        return None
    return _xtext("ORCPT", address, MAX_ORCPT)


def _xtext(key: str, value: str | None, limit: int) -> Reply | None:
    if value is None or not _XTEXT.match(value):
        return replies.BAD_XTEXT.format(key)
    if len(value) > limit:
        return replies.PARAMETER_TOO_LONG.format(key, limit)
    return None
