"""Authentication-Results (RFC 8601): the header we add, and the filter that removes any that
arrives claiming our authserv-id (section 5), so nobody can forge our verdict.

Pure.  The filter sits between the DATA reader and the spool file and sees complete lines
(dot-stuffing removed).  It looks at the header section only: after the blank line that ends
it, every block is passed on untouched (the body is never changed, invariant 7).  Only an
Authentication-Results field (with its continuation lines) is held until it is complete and
then dropped or passed on; the rest of the header section streams through as it comes.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence

_AR_NAME = re.compile(rb"authentication-results[ \t]*:", re.I)
_AUTHSERV = re.compile(rb"^[ \t\r\n]*(?:\([^)]*\)[ \t\r\n]*)*([^; \t\r\n(]+)")


def header(hostname: str, results: Sequence[str]) -> bytes:
    """``Authentication-Results: hostname; r1; r2`` folded one result a line; ``none`` when
    there is nothing to say."""
    body = ";\r\n\t".join([hostname, *results]) if results else f"{hostname}; none"
    return f"Authentication-Results: {body}\r\n".encode("ascii", "replace")


def authserv_id(field: bytes) -> str:
    """The authserv-id of a raw ``Authentication-Results:`` field (name included)."""
    value = field.split(b":", 1)[1] if b":" in field else b""
    match = _AUTHSERV.match(value)
    return match.group(1).decode("ascii", "replace").lower() if match else ""


def _header_end(data: bytes) -> int:
    """Where the empty line that ends the header section ends in ``data`` (its length if
    it is not there): a 100 KB message's body is not cut into lines."""
    if data.startswith(b"\r\n"):
        return 2
    i = data.find(b"\r\n\r\n")
    return i + 4 if i >= 0 else len(data)


class ForgedResultsFilter:
    """``write`` what is fed, less the Authentication-Results fields naming ``hostname``."""

    def __init__(self, hostname: str, write: Callable[[bytes], None]) -> None:
        self.hostname = hostname.lower()
        self.out = write
        self.removed = 0
        self._in_headers = True
        self._held: list[bytes] = []  # an Authentication-Results field being read

    def write(self, data: bytes) -> None:
        if not self._in_headers:
            self.out(data)
            return
        passed: list[bytes] = []
        end = _header_end(data)  # only the header section is split into lines
        body = data[end:]
        lines = data[:end].split(b"\r\n")
        tail = lines.pop()  # b"" when data ends with CRLF (the reader gives whole lines)
        for i, line in enumerate(lines):
            if self._held and line[:1] in (b" ", b"\t"):
                self._held.append(line + b"\r\n")
                continue
            self._release(passed)
            if line == b"":  # end of the header section: the rest is body
                self._in_headers = False
                passed.append(b"\r\n")
                rest = b"\r\n".join(lines[i + 1 :] + [tail])
                passed.append(rest)
                break
            if _AR_NAME.match(line):
                self._held = [line + b"\r\n"]
            else:
                passed.append(line + b"\r\n")
        else:
            if tail:
                self._release(passed)
                passed.append(tail)
        if body:
            passed.append(body)
        if passed:
            self.out(b"".join(passed))

    def close(self) -> None:
        """The end of data: a held field at the very end is released (or dropped)."""
        passed: list[bytes] = []
        self._release(passed)
        if passed:
            self.out(b"".join(passed))

    def _release(self, passed: list[bytes]) -> None:
        if not self._held:
            return
        field = b"".join(self._held)
        self._held = []
        if authserv_id(field) == self.hostname:
            self.removed += 1
        else:
            passed.append(field)
