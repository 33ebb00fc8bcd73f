"""The queue as it was at a clean stop: what the next start-up reads instead of a million
envelope files (issue 17, goal 4: with a cold page cache, after a reboot, reading a million
small files took 56.6 s; checking that they did not change, 5.3 s).

Pure file work: no reactor.  The server writes ``snapshot`` in the spool root as it stops,
after the spool process has finished every round (``write``): for each waiting message, its
envelope as the server holds it (packed, ``queue.packed``; not those in use, nor those a failed
write may have left different from their files: ``Envelopes.doubt``) beside what ``stat`` said
of ``env/<id>`` then (inode, mtime, ctime, size).  The next start-up (``recovery``) takes an
envelope from it only while ``env/<id>`` is still that very file (the four figures match) and
was not written by a round a crash may have torn (``checkpoint``), and its message has no line
in the try log (``tries``); any other envelope is read from its file, as without a snapshot.
The files stay the truth; the snapshot is a cache of them, used once: ``Spool.recovered``
removes it when it has read the queue, so a crash later never starts from an old one.

Layout (integers big-endian): a header line naming the format and the packing dictionary (a
snapshot packed by another version is not read); records sorted by queue id, each ``id-length
id ino mtime_ns ctime_ns size crc32 blob-length blob`` (the CRC32 covers the id, the stamp and
the blob); an index of every ``INDEX_EVERY``-th record's id and offset (workers start reading
at their chunk's place); a footer with the index's offset, the record count and the index's
CRC32.  Written to a temporary name, fsync'd, renamed: a snapshot is whole or absent.
"""

from __future__ import annotations

import bisect
import os
import struct
import zlib
from collections.abc import Iterable
from typing import BinaryIO, NamedTuple

from mxbackup.queue.packed import DICTIONARY_CRC
from mxbackup.queue.rounds import unlink_quietly

FILE = "snapshot"
SNAPSHOT_FROM = 10_000  # messages: below this, reading the files takes under a second
INDEX_EVERY = 1_000
_HEADER = b"mxbackup snapshot 2 %08x\n" % DICTIONARY_CRC
_STAMP = struct.Struct(">QqqQ")  # ino, mtime_ns, ctime_ns, size
_SUM = struct.Struct(">II")  # crc32 of the id, the stamp and the blob; len(blob)
_RECORD = struct.Struct(">QqqQII")  # the stamp and the sum, as read
_FOOTER = struct.Struct(">QQI8s")  # index offset, records, crc32(index), end mark
_END = b"snap-end"
_OFFSET = struct.Struct(">Q")


class Stamp(NamedTuple):
    """What ``stat`` says of an envelope file: another file, or a rewrite, differs."""

    ino: int
    mtime_ns: int
    ctime_ns: int
    size: int

    @classmethod
    def of(cls, st: os.stat_result) -> Stamp:
        return cls(st.st_ino, st.st_mtime_ns, st.st_ctime_ns, st.st_size)


class Entry(NamedTuple):
    stamp: Stamp
    packed: bytes


def write(root: str, packed: Iterable[tuple[str, bytes]]) -> int:
    """Write the snapshot of ``packed`` (queue id, packed envelope: those the server holds
    unchanged since they were written, in any order) under the spool ``root``; a message
    whose envelope file is gone is left out.  Returns the records written.  OSError if it
    cannot be written (then nothing is left behind)."""
    path = os.path.join(root, FILE)
    tmp = path + ".tmp"
    env_dir = os.open(os.path.join(root, "env"), os.O_RDONLY | os.O_DIRECTORY)
    try:
        with open(tmp, "wb") as out:
            count = _write_records(out, env_dir, sorted(packed))
            out.flush()
            os.fsync(out.fileno())
        os.rename(tmp, path)
    except BaseException:
        unlink_quietly(tmp)
        raise
    finally:
        os.close(env_dir)
    return count


def _write_records(out: BinaryIO, env_dir: int, items: list[tuple[str, bytes]]) -> int:
    write_ = out.write
    write_(_HEADER)
    offset, count, index = len(_HEADER), 0, []
    for qid, blob in items:
        name = qid.encode("ascii", "replace")
        if len(name) > 255 or b"?" in name:
            continue  # not an id the server makes (a file put there by hand): read at start-up
        now = stamp_of(env_dir, qid)
        if now is None:
            continue  # delivered or removed meanwhile: nothing to keep
        if count % INDEX_EVERY == 0:
            index.append(bytes([len(name)]) + name + _OFFSET.pack(offset))
        stamp = _STAMP.pack(*now)
        sums = _SUM.pack(_crc(name, stamp, blob), len(blob))
        record = bytes([len(name)]) + name + stamp + sums + blob
        write_(record)
        offset += len(record)
        count += 1
    body = b"".join(index)
    write_(body)
    write_(_FOOTER.pack(offset, count, zlib.crc32(body), _END))
    return count


def size_of(packed: list[tuple[str, bytes]]) -> int:
    """About the octets ``write`` takes for ``packed`` (the index and footer are small)."""
    return sum(len(qid) + len(blob) + 1 + _RECORD.size for qid, blob in packed)


class Snapshot:
    """A snapshot found at start-up: where each chunk of names starts in it."""

    def __init__(
        self, path: str, count: int, firsts: list[str], offsets: list[int], end: int
    ) -> None:
        self.path = path
        self.count = count
        self._firsts = firsts
        self._offsets = offsets
        self.end = end  # where the records end (the index starts)

    @classmethod
    def open(cls, root: str) -> Snapshot | None:
        """The snapshot under ``root`` if there is one this version can read (else None)."""
        path = os.path.join(root, FILE)
        try:
            with open(path, "rb") as f:
                if f.read(len(_HEADER)) != _HEADER:
                    return None
                size = os.fstat(f.fileno()).st_size
                if size < len(_HEADER) + _FOOTER.size:
                    return None
                f.seek(size - _FOOTER.size)
                at, count, crc, end = _FOOTER.unpack(f.read(_FOOTER.size))
                if end != _END or not len(_HEADER) <= at <= size - _FOOTER.size:
                    return None
                f.seek(at)
                body = f.read(size - _FOOTER.size - at)
        except OSError:
            return None
        if zlib.crc32(body) != crc:
            return None
        firsts, offsets = _parse_index(body)
        if firsts is None or not _in_order(firsts, offsets, at):
            return None
        return cls(path, count, firsts, offsets, at)

    def span(self, first: str, last: str) -> tuple[int, int]:
        """Where the records of ids ``first`` to ``last`` lie: from the indexed record at or
        before ``first`` to the indexed record after ``last`` (or the index)."""
        i = bisect.bisect_right(self._firsts, first) - 1
        j = bisect.bisect_right(self._firsts, last)
        start = self._offsets[i] if i >= 0 else len(_HEADER)
        stop = self._offsets[j] if j < len(self._offsets) else self.end
        return start, stop


def _parse_index(body: bytes) -> tuple[list[str], list[int]] | tuple[None, None]:
    firsts, offsets, i = [], [], 0
    try:
        while i < len(body):
            n = body[i]
            firsts.append(body[i + 1 : i + 1 + n].decode("ascii"))
            (offset,) = _OFFSET.unpack_from(body, i + 1 + n)
            offsets.append(offset)
            i += 1 + n + _OFFSET.size
    except (IndexError, struct.error, UnicodeDecodeError):
        return None, None
    return firsts, offsets


def _in_order(firsts: list[str], offsets: list[int], end: int) -> bool:
    """The index names ids in order at offsets in order, between the header and ``end``."""
    bounds = [len(_HEADER), *offsets, end]
    return firsts == sorted(firsts) and bounds == sorted(bounds)


def entries(path: str, span: tuple[int, int], first: str, last: str) -> dict[str, Entry]:
    """The records of ids ``first`` to ``last`` (inclusive) in the snapshot at ``path``,
    within ``span`` (``Snapshot.span``).  A record whose CRC does not match is left out (its
    envelope is read from its file); a snapshot that cannot be read gives what was read."""
    found: dict[str, Entry] = {}
    try:
        with open(path, "rb") as f:
            f.seek(span[0])
            data = f.read(span[1] - span[0])
    except OSError:
        return found
    i = 0
    try:
        while i < len(data):
            n = data[i]
            name = data[i + 1 : i + 1 + n]
            qid, stamp_at = name.decode("ascii"), i + 1 + n
            ino, mtime, ctime, size, crc, length = _RECORD.unpack_from(data, stamp_at)
            at = stamp_at + _RECORD.size
            blob, i = data[at : at + length], at + length
            if qid > last:
                break
            stamp = data[stamp_at : stamp_at + _STAMP.size]
            if qid >= first and len(blob) == length and _crc(name, stamp, blob) == crc:
                found[qid] = Entry(Stamp(ino, mtime, ctime, size), blob)
    except (IndexError, struct.error, UnicodeDecodeError):
        pass
    return found


def _crc(name: bytes, stamp: bytes, blob: bytes) -> int:
    return zlib.crc32(blob, zlib.crc32(stamp, zlib.crc32(name)))


def stamp_of(dir_fd: int, name: str) -> Stamp | None:
    try:
        return Stamp.of(os.stat(name, dir_fd=dir_fd, follow_symlinks=False))
    except OSError:
        return None


def discard(root: str) -> None:
    """Remove the snapshot, and what a stop killed while writing it left (read once; a crash
    later must not start from it)."""
    unlink_quietly(os.path.join(root, FILE))
    unlink_quietly(os.path.join(root, FILE + ".tmp"))
