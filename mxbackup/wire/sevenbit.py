"""8-bit mail made 7-bit for a target that does not offer 8BITMIME (RFC 6152 section 3).

Pure: no reactor, no I/O beyond the chunks it is given.  This is the one place where mxbackup
changes a message body (a DKIM signature over it breaks, as with Postfix's conversion); the
route's ``allow_8bit_conversion: false`` refuses such mail with 5.6.3 instead.

As Postfix's ``mime_state`` does it (``MIME_OPT_DOWNGRADE``), line by line, streaming: the MIME
structure is followed (Content-Type, boundaries, message/rfc822 headers nested inside), header
fields pass unchanged, and

- a leaf part declared ``8bit`` or ``binary`` is re-encoded as quoted-printable, its
  Content-Transfer-Encoding field replaced by ``quoted-printable`` at the end of its headers;
- a multipart or message/rfc822 part declared ``8bit``/``binary`` is declared ``7bit`` (what
  it contains is converted);

and, where Postfix sends 8-bit octets anyway, also

- a leaf part without Content-Transfer-Encoding (or ``7bit``) whose body has 8-bit octets is
  re-encoded as quoted-printable too (a non-MIME message gets ``MIME-Version: 1.0`` and
  ``Content-Type: text/plain; charset=unknown-8bit`` (RFC 1428) when it has none).

That last rule needs to know before a part's headers are sent whether its body has 8-bit
octets: hence two passes over the stored file, ``scan`` (which also says whether there is
anything to convert at all: a message without 8-bit octets goes as it is) then ``Converter``.
What stays 8-bit: header fields (as in Postfix; RFC 2047 re-encoding is not attempted), and
8-bit octets in a multipart's preamble or epilogue or in a part declared base64 or
quoted-printable (already broken; passed on as they are).
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

_HEADER = re.compile(rb"[!-9;-~]+[ \t]*:")
_TYPE = re.compile(rb"\s*([^/;\s]+)\s*/\s*([^;\s]+)")
_BOUNDARY = re.compile(rb'(?i);\s*boundary\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^;\s]+))')
_EIGHT = (b"8bit", b"binary")
_NESTED = ((b"message", b"rfc822"), (b"message", b"global"))
MAX_FIELD = 64 * 1024  # octets of one header field kept for parsing (all of it is sent)


@dataclass
class Part:
    """One header block (the message's, a body part's, a nested message's) and its body."""

    primary: bool  # a message's header block (the top one or a nested message/rfc822)
    default_type: tuple[bytes, bytes] = (b"text", b"plain")
    ctype: tuple[bytes, bytes] | None = None
    boundary: bytes | None = None
    encoding: bytes = b""
    mime_version: bool = False
    body_8bit: bool = False

    @property
    def type(self) -> tuple[bytes, bytes]:
        return self.ctype or self.default_type

    @property
    def composite(self) -> bool:
        return self.type[0] == b"multipart" or self.type in _NESTED

    def action(self) -> str:
        """ "qp", "7bit" (a composite's declaration) or "" (unchanged)."""
        if self.composite:
            return "7bit" if self.encoding in _EIGHT else ""
        if self.encoding in _EIGHT or (self.encoding in (b"", b"7bit") and self.body_8bit):
            return "qp"
        return ""


@dataclass
class Plan:
    """What ``scan`` found: every header block in order, and whether any octet is 8-bit."""

    parts: list[Part] = field(default_factory=list)
    eight_bit: bool = False

    @property
    def needed(self) -> bool:
        """Something to change: 8-bit octets, and a part whose declaration changes."""
        return self.eight_bit and any(p.action() for p in self.parts)


class _Walker:
    """The MIME state machine, one line (with its CRLF) at a time.  With ``plan`` it
    converts (``out`` collects the result); without, it records the parts it meets."""

    def __init__(self, plan: Plan | None = None) -> None:
        self.plan = plan
        self.parts: list[Part] = []
        self.out: list[bytes] | _Nowhere = [] if plan is not None else _Nowhere()
        self.qp: list[bytes] = []  # body lines waiting to be encoded together
        self.stack: list[tuple[bytes, tuple[bytes, bytes]]] = []  # boundary, default type
        self.eight_bit = False
        self.field: list[bytes] = []
        self.in_header = True
        self.part = self._begin(Part(primary=True))
        self.converting = False  # the current body is re-encoded

    def _begin(self, part: Part) -> Part:
        if self.plan is not None and len(self.parts) < len(self.plan.parts):
            part = self.plan.parts[len(self.parts)]
        self.parts.append(part)
        self.in_header = True
        self.field = []
        return part

    def feed(self, data: bytes) -> None:
        """Whole lines (``data`` ends with LF).  Header lines and lines that may be a boundary
        go one by one; the runs of body lines between them in one piece (C-speed checks and
        encoding: this is what keeps a 25 MB message from holding the reactor long)."""
        pos, size = 0, len(data)
        while pos < size:
            if self.in_header or (self.stack and data.startswith(b"--", pos)):
                end = data.index(b"\n", pos) + 1
                self.line(data[pos:end])
                pos = end
                continue
            stop = data.find(b"\n--", pos) + 1 if self.stack else 0
            stop = stop or size
            self._body_block(data[pos:stop])
            pos = stop

    def line(self, line: bytes) -> None:
        if not line.isascii():
            self.eight_bit = True
        if self.in_header:
            self._header_line(line)
        else:
            self._body_line(line)

    def end(self) -> None:
        if self.in_header:
            self._end_headers(None)
        self._flush_qp()

    # -- headers -------------------------------------------------------------------------------
    def _header_line(self, line: bytes) -> None:
        if self.field and line[:1] in (b" ", b"\t"):
            self.field.append(line)
            return
        self._flush_field()
        if _HEADER.match(line):
            self.field = [line]
        elif line in (b"\r\n", b"\n"):
            self._end_headers(line)
        else:  # not a header: the headers ended without their blank line
            self._end_headers(None)
            self._body_line(line)

    def _flush_field(self) -> None:
        if not self.field:
            return
        lines, self.field = self.field, []
        raw = b"".join(lines)[:MAX_FIELD]
        name, _, value = raw.partition(b":")
        name = name.strip().lower()
        value = value.replace(b"\r\n", b"").replace(b"\n", b"")
        part = self.part
        if self.plan is None:
            if name == b"content-type":
                self._content_type(part, value)
            elif name == b"content-transfer-encoding":
                part.encoding = value.strip().split(b";")[0].strip().lower()
            elif name == b"mime-version":
                part.mime_version = True
        if name == b"content-transfer-encoding" and part.action():
            return  # replaced at the end of the headers
        self.out.extend(lines)

    @staticmethod
    def _content_type(part: Part, value: bytes) -> None:
        m = _TYPE.match(value)
        if m is None:
            return
        part.ctype = (m.group(1).lower(), m.group(2).lower())
        b = _BOUNDARY.search(value, m.end())
        if b is not None and part.ctype[0] == b"multipart":
            bound = b.group(1) if b.group(1) is not None else b.group(2)
            part.boundary = re.sub(rb"\\(.)", rb"\1", bound)

    def _end_headers(self, blank: bytes | None) -> None:
        self._flush_field()
        part = self.part
        action = part.action() if self.plan is not None else ""
        if action:
            extra = []
            if part.primary and action == "qp" and not part.mime_version:
                extra.append(b"MIME-Version: 1.0\r\n")
                if part.ctype is None:
                    extra.append(b"Content-Type: text/plain; charset=unknown-8bit\r\n")
            cte = b"quoted-printable" if action == "qp" else b"7bit"
            extra.append(b"Content-Transfer-Encoding: " + cte + b"\r\n")
            self.out.extend(extra)
            blank = blank or b"\r\n"
        if blank is not None:
            self.out.append(blank)
        self.in_header = False
        self.converting = action == "qp"
        if part.type in _NESTED:
            self.part = self._begin(Part(primary=True))  # a message: MIME-Version is its own
        elif part.composite:
            if part.boundary:
                self.stack.append((part.boundary, _default_child(part)))
            self.converting = False  # the preamble
            self._outside = True

    # -- bodies --------------------------------------------------------------------------------
    def _body_line(self, line: bytes) -> None:
        if self.stack and line[:2] == b"--" and self._boundary(line):
            return
        self._body_block(line)

    def _body_block(self, block: bytes) -> None:
        """Body lines of the current part (none of them a boundary)."""
        if not block.isascii():
            self.eight_bit = True
            if self.plan is None and self._in_leaf_body():
                self.part.body_8bit = True
        if self.plan is None:
            return
        if self.converting:
            self.qp.append(block)
        else:
            self._flush_qp()
            self.out.append(block)

    def _in_leaf_body(self) -> bool:
        return not self.part.composite and not self.in_header and not self._outside

    _outside = False  # in a preamble or an epilogue

    def _boundary(self, line: bytes) -> bool:
        for depth in range(len(self.stack) - 1, -1, -1):
            bound, default = self.stack[depth]
            if not line.startswith(bound, 2):
                continue
            self._flush_qp()
            del self.stack[depth + 1 :]
            self.out.append(line)
            if line.startswith(b"--", 2 + len(bound)):
                self.stack.pop()
                self.converting = False
                self._outside = True  # the epilogue
            else:
                self._outside = False
                self.part = self._begin(Part(primary=False, default_type=default))
            return True
        return False

    def _flush_qp(self) -> None:
        if self.qp:
            lines, self.qp = self.qp, []
            self.out.append(_encode(lines))


def _default_child(part: Part) -> tuple[bytes, bytes]:
    return (b"message", b"rfc822") if part.type[1] == b"digest" else (b"text", b"plain")


class _Nowhere:
    """Where the first pass "writes": nothing is kept."""

    def append(self, _: bytes) -> None:
        pass

    def extend(self, _: Iterable[bytes]) -> None:
        pass


def _encode(lines: list[bytes]) -> bytes:
    """Quoted-printable (RFC 2045 6.7) of whole lines, each CRLF kept as a hard line break
    (soft breaks keep lines within 76 octets).  The stored message is canonical CRLF; should
    a bare CR or LF be there all the same, it is encoded (=0D, =0A, then a soft break), line
    by line, so that decoding gives back every octet."""
    text = b"".join(lines)
    crlf = text.count(b"\r\n")
    if text.count(b"\r") == crlf and text.count(b"\n") == crlf:
        return binascii.b2a_qp(text, istext=True)  # C speed: the common case
    out = []
    for ln in text.split(b"\r\n"):
        encoded = binascii.b2a_qp(ln, istext=False)  # bare CR/LF -> =0D/=0A, soft breaks "=\n"
        out.append(encoded.replace(b"=0A", b"=0A=\n").replace(b"=\n", b"=\r\n"))
    return b"\r\n".join(out)


def scan(chunks: Iterable[bytes]) -> Plan:
    """The first pass: the message's parts, and whether it has 8-bit octets at all."""
    walker = _Walker()
    tail = b""
    for chunk in chunks:
        data = tail + chunk
        end = data.rfind(b"\n") + 1
        tail = data[end:]
        if end:
            walker.feed(data[:end])
    if tail:
        walker.line(tail)
    walker.end()
    return Plan(walker.parts, walker.eight_bit)


class Converter:
    """The second pass: ``feed`` the same octets in chunks of any size, each call returns
    what is ready; ``end`` the rest.  Holds one line (and one header field) at a time."""

    def __init__(self, plan: Plan) -> None:
        self._walker = _Walker(plan)
        self._tail = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._tail + chunk
        end = data.rfind(b"\n") + 1
        self._tail = data[end:]
        walker = self._walker
        if end:
            walker.feed(data[:end])
        walker._flush_qp()
        return self._take()

    def end(self) -> bytes:
        if self._tail:
            self._walker.line(self._tail)
            self._tail = b""
        self._walker.end()
        return self._take()

    def _take(self) -> bytes:
        out, self._walker.out = self._walker.out, []
        return b"".join(out)


def convert(data: bytes) -> bytes:
    """The whole message at once (tests, small messages)."""
    plan = scan([data])
    if not plan.needed:
        return data
    converter = Converter(plan)
    return converter.feed(data) + converter.end()
