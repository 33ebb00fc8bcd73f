"""Cutting the command stream into lines, with a length limit (pitfall 5).  Pure: no reactor.

A line longer than the limit is reported once and skipped to its end, never read as commands;
a client that never sends LF costs at most ``limit`` octets of buffer.
"""

from __future__ import annotations


class LineReader:
    def __init__(self, limit: int) -> None:
        self.limit = limit  # octets, including the CRLF
        self.skipping = False  # the rest of an over-long line is being thrown away

    def cut(self, buffer: bytes) -> tuple[int, bytes | None, bool]:
        """From the start of ``buffer``: (octets used, the next line without its CRLF or LF
        if there is one, whether a line passed the limit).  Nothing used: wait for input."""
        end = buffer.find(b"\n")
        if self.skipping:
            self.skipping = end < 0
            return (len(buffer) if end < 0 else end + 1), None, False
        if end < 0:
            if len(buffer) < self.limit:
                return 0, None, False
            self.skipping = True
            return len(buffer), None, True
        if end + 1 > self.limit:
            return end + 1, None, True
        line = buffer[: end - 1] if end > 0 and buffer[end - 1] == 13 else buffer[:end]
        return end + 1, line, False
