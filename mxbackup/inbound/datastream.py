"""The DATA phase as a byte stream: end-of-data, dot-stuffing, limits, smuggling defence.

Pure: no reactor.  Twisted's server reads the body a line at a time and splits lines on a
bare LF; here the body is taken in blocks of complete CRLF lines (fast for large messages)
and only ``<CRLF>.<CRLF>`` ends it.  Policy (RFC 5321 2.3.8, CVE-2023-51764):

- a bare CR or LF anywhere in the text marks the message as refused (``554 5.6.0``) once
  the real end of data arrives; so ``\\n.\\r\\n`` and friends are ordinary text and can never
  end the message early or smuggle a second one;
- a line longer than 998 octets plus CRLF is refused (``500 5.5.2``) and the partial line is
  never buffered beyond that limit, so a client that never sends CRLF costs bounded memory;
- more than ``max_size`` octets: ``552 5.3.4``; more than ``max_received`` Received headers:
  ``554 5.4.0`` (these, and the empty line put before a message without a header section, are
  ``messagetext.MessageText``'s, which BDAT shares).
After the first refusal nothing more is written; the stream is still read to its end so the
session stays in step.
"""

from __future__ import annotations

from collections.abc import Callable

from mxbackup import replies
from mxbackup.inbound.messagetext import MessageText
from mxbackup.replies import Reply

MAX_TEXT_LINE = 1000  # octets including CRLF (RFC 5321 4.5.3.1.6)


class DataReader:
    def __init__(self, write: Callable[[bytes], None], max_size: int, max_received: int):
        self.text = MessageText(write, max_size, max_received)
        self._midline = False  # an over-long line is being skipped

    @property
    def size(self) -> int:
        return self.text.size

    @property
    def received_headers(self) -> int:
        return self.text.received_headers

    @property
    def error(self) -> Reply | None:
        return self.text.error

    def feed(self, buf: bytes) -> tuple[int, bool]:
        """Consume what can be consumed of ``buf``: returns (octets consumed, end of data seen).
        ``buf`` always starts where the previous call stopped; whatever follows the end of
        data is left unconsumed for the command parser."""
        if not self._midline and buf.startswith(b".\r\n"):
            self.text.finish()
            return 3, True
        end = buf.find(b"\r\n.\r\n")
        if end >= 0:
            self._take(buf[: end + 2], not self._midline)
            self._midline = False
            self.text.finish()
            return end + 5, True
        consumed = buf.rfind(b"\r\n") + 2
        if consumed >= 2:
            self._take(buf[:consumed], not self._midline)
            self._midline = False
        else:
            consumed = 0
        if len(buf) - consumed <= MAX_TEXT_LINE:  # + 1 for a stuffed dot
            return consumed, False
        # A line longer than the limit: refuse the message and skip the line's text, keeping
        # a trailing CR in case the LF of its CRLF comes in the next packet.
        self.text.fail(replies.TEXT_LINE_TOO_LONG)
        self._midline = True
        return len(buf) - (1 if buf.endswith(b"\r") else 0), False

    def _take(self, part: bytes, at_line_start: bool) -> None:
        """``part`` is whole lines, each ending in CRLF (the caller cuts after a CRLF)."""
        if not part:
            return
        # One split on CRLF gives both checks their lines (a search for a single octet is
        # three times faster than for CRLF: the split is the one two-octet search left).
        # A bare CR or LF is any CR or LF left inside a line.
        lines = part.split(b"\r\n")
        flat = b"".join(lines)
        if b"\r" in flat or b"\n" in flat:
            self.text.fail(replies.BARE_NEWLINE)
        longest = max(map(len, lines))
        if at_line_start and part[:1] == b".":
            part = part[1:]
        if b"." in part:  # (none in base64: most of a big message)
            part = part.replace(b"\r\n.", b"\r\n")
        # The limit counts the text, not the dot added for transparency (RFC 5321 4.5.3.1.6):
        # only a line that may be too long is measured again, after unstuffing.
        if longest >= MAX_TEXT_LINE - 1 and max(map(len, part.split(b"\n"))) >= MAX_TEXT_LINE:
            self.text.fail(replies.TEXT_LINE_TOO_LONG)
        self.text.feed(part)
