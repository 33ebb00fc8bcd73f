"""The message text as it is stored, fed in pieces cut anywhere: what DATA and BDAT share.

Pure: no reactor.  DATA's framing (``datastream``: end of data, dot-unstuffing, line lengths)
and BDAT's (``chunking``: counted octets) both end here, so the same message stores the same
octets whichever way it came:

- a message that does not begin with a header field gets an empty line first, so its first
  line stays body below our Received header;
- the Received headers of the header section are counted (``max_received`` → ``554 5.4.0``);
- more than ``max_size`` octets → ``552 5.3.4``;
- with ``check_newlines`` (BDAT; DATA checks the wire form itself), a bare CR or LF → ``554
  5.6.0``, the same policy as DATA's, so no message with one is ever stored;
- at the end (``finish``), text whose last line has no CRLF gets one, as DATA's framing
  always gives it (so the delivery side's dot-stuffing of the stored form is right).

After the first refusal nothing more is written.  Memory is bounded: at most
``MAX_HELD`` octets of a line are held, and only while the header section lasts.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from mxbackup import replies
from mxbackup.replies import Reply

MAX_HELD = 1000  # octets of the current header line kept to classify it
_ALL_BUT_CR_LF = bytes(b for b in range(256) if b not in b"\r\n")
_FIELD_NAME_CHARS = re.compile(rb"[!-9;-~]*\Z")  # a header field name so far (no colon yet)
_HEADER_FIELD = re.compile(rb"[!-9;-~]+:")
_RECEIVED = re.compile(rb"^received[ \t]*:", re.I | re.M)


class MessageText:
    def __init__(
        self,
        write: Callable[[bytes], None],
        max_size: int,
        max_received: int,
        check_newlines: bool = False,
    ) -> None:
        self._write = write
        self._max_size = max_size
        self._max_received = max_received
        self._check_newlines = check_newlines
        self.size = 0
        self.received_headers = 0
        self.error: Reply | None = None
        self._state = "start"  # start (is there a header section?), headers, body
        self._held = b""  # start: what came before the first line could be classified
        self._line = b""  # headers: the current line's beginning (its CRLF not yet seen)
        self._cr = False  # check_newlines: the previous piece ended with a CR
        self._tail = b""  # the last two octets, for finish()

    def feed(self, data: bytes) -> None:
        if not data:
            return
        if self._check_newlines:
            self._newlines(data)
        self.size += len(data)
        if self.size > self._max_size:
            self.fail(replies.MESSAGE_TOO_BIG.format(self._max_size))
        self._tail = data[-2:] if len(data) > 1 else (self._tail + data)[-2:]
        if self._state == "start":
            data = self._start(self._held + data)
            if data is None:
                return
        if self._state == "headers":
            self._headers(data)
        self._emit(data)

    def finish(self) -> None:
        """The end of the message: classify what is held, end the last line."""
        if self._check_newlines and self._cr:
            self.fail(replies.BARE_NEWLINE)
        if self._state == "start" and self._held:
            held, self._held = self._held, b""
            self._classify(held)
            if self._state == "headers":
                self._headers(held)
            self._emit(held)
        if self.size and self._tail != b"\r\n":
            self._emit(b"\r\n")

    def fail(self, reply: Reply) -> None:
        if self.error is None:
            self.error = reply

    def _start(self, data: bytes) -> bytes | None:
        """Hold ``data`` while its first line could still begin a header field or be the
        empty line; else classify it and return it."""
        undecided = data == b"\r" or (
            len(data) < MAX_HELD and _FIELD_NAME_CHARS.match(data) is not None
        )
        if undecided:
            self._held = data
            return None
        self._held = b""
        self._classify(data)
        return data

    def _classify(self, data: bytes) -> None:
        if data.startswith(b"\r\n") or _HEADER_FIELD.match(data):
            self._state = "headers"
        else:
            self._state = "body"  # no header section: keep the text a body (below ours)
            self._emit(b"\r\n")

    def _headers(self, data: bytes) -> None:
        buf = self._line + data
        if buf.startswith(b"\r\n"):
            self._state, self._line = "body", b""
            return
        end = buf.find(b"\r\n\r\n")
        if end >= 0:
            self._state, self._line = "body", b""
            region = buf[: end + 2]
        else:
            cut = buf.rfind(b"\n") + 1
            region, rest = buf[:cut], buf[cut:]
            # Only a line's beginning (is it Received?) and its last octets (CR?) matter.
            self._line = rest if len(rest) <= MAX_HELD else rest[: MAX_HELD - 2] + rest[-2:]
        self.received_headers += len(_RECEIVED.findall(region))
        if self.received_headers > self._max_received:
            self.fail(replies.TOO_MANY_HOPS.format(self.received_headers))

    def _newlines(self, data: bytes) -> None:
        """Every CR and LF must belong to a CRLF pair, also across pieces."""
        if self._cr:
            if data[:1] != b"\n":
                self.fail(replies.BARE_NEWLINE)
            else:
                data = data[1:]
        self._cr = data.endswith(b"\r")
        if self._cr:
            data = data[:-1]
        ends = len(data.translate(None, _ALL_BUT_CR_LF))
        if ends != 2 * data.count(b"\r\n"):
            self.fail(replies.BARE_NEWLINE)

    def _emit(self, data: bytes) -> None:
        if self.error is None:
            self._write(data)
