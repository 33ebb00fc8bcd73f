"""Dot-stuffing (RFC 5321 4.5.2) of CRLF text handed over in arbitrary chunks.

Twisted's ``ESMTPSender`` stuffs each 16 KiB chunk on its own: a line starting with "." exactly
at a chunk boundary goes out unescaped, so attacker-built mail could end DATA early at the
primary and smuggle a second message (pitfall 11).  Here the last two octets of the previous
chunk are kept, so stuffing is the same however the text is cut.  The stored message is
canonical CRLF already and is sent as is (no LF to CRLF rewriting).
"""

from __future__ import annotations


class DotStuffer:
    """Stateful dot-stuffing of CRLF text delivered in arbitrary chunks."""

    def __init__(self) -> None:
        self._tail = b"\r\n"  # the start of the message is the start of a line

    def __call__(self, chunk: bytes) -> bytes:
        if not chunk:
            return chunk
        joined = self._tail + chunk
        # Any inserted dot sits after "\r\n." whose dot is in ``chunk`` (the tail is 2 octets).
        out = joined.replace(b"\r\n.", b"\r\n..")[len(self._tail) :]
        self._tail = joined[-2:]
        return out

    def ends_with_crlf(self) -> bool:
        return self._tail == b"\r\n"

    def end_of_data(self) -> bytes:
        """What ends the data: the final ".", on a line of its own."""
        return b".\r\n" if self.ends_with_crlf() else b"\r\n.\r\n"
