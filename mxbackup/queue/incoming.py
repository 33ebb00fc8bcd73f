"""A message being received, before its commit (``spool.Spool.commit``): in memory, or
spilled to the spool's tmp/ while it arrives when it is big."""

from __future__ import annotations

from typing import Any

from mxbackup.queue.rounds import unlink_quietly

SPILL = 256 * 1024  # a message larger than this is written to tmp/ while it arrives


class Incoming:
    """A message being received.  Up to ``SPILL`` octets stay in memory, so the reactor never
    waits on the file system; larger messages spill to ``tmp/`` as they arrive (writes to the
    page cache).  Creation, the rest of the writing and the fsync happen in the commit's
    round.  A write error is kept and reported at commit."""

    def __init__(self, path: str, queue_id: str) -> None:
        """``path``: where in the spool's tmp/ it spills (``Spool.incoming`` makes one)."""
        self.id = queue_id
        self.path = path
        self.size = 0
        self.error: OSError | None = None
        self._chunks: list[bytes] = []
        self._file: Any = None
        self.prefix = b""  # header fields decided at the end of data, to go on top (checks)

    def write(self, data: bytes) -> None:
        if self.error is not None:
            return
        self.size += len(data)
        if self._file is None:
            self._chunks.append(data)
            if self.size > SPILL:
                self._spill()
            return
        try:
            self._file.write(data)
        except OSError as e:
            self.error = e

    def _spill(self) -> None:
        try:
            self._file = open(self.path, "xb", buffering=1 << 16)  # noqa: SIM115
            self._file.writelines(self._chunks)
        except OSError as e:
            self.error = e
        self._chunks = []

    def add_prefix(self, prefix: bytes) -> None:
        """Header fields to store above everything written so far (before ``seal``)."""
        self.prefix = prefix + self.prefix
        self.size += len(prefix)

    def contents(self) -> bytes | None:
        """What was written so far while it is in memory; None once spilled (then
        ``flush`` and read ``path``)."""
        return b"".join(self._chunks) if self._file is None else None

    def flush(self) -> None:
        """Push a spilled message's buffered octets to the file (to read it back)."""
        if self._file is not None and self.error is None:
            try:
                self._file.flush()
            except OSError as e:
                self.error = e

    def seal(self) -> bytes | None:
        """Stop writing (reactor thread, at commit): the message's bytes while it is in
        memory, or None once a spilled file is flushed and closed (the round fsyncs it by
        name).  Raises the write error kept since the message arrived."""
        if self.error is not None:
            raise self.error
        if self._file is None:
            data, self._chunks = b"".join([self.prefix, *self._chunks]), []
            return data
        f, self._file = self._file, None
        try:
            f.flush()
        finally:
            f.close()
        return None

    def abort(self) -> None:
        self._chunks = []
        if self._file is not None:
            try:
                self._file.close()
            except OSError:
                pass
            self._file = None
        unlink_quietly(self.path)
