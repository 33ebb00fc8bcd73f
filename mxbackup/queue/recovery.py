"""Reading the queue at start-up: each envelope read, checked and packed, by worker processes
when there are many.

Pure reading: no Twisted, no writes (``Spool.recovered`` moves what cannot be read to corrupt/
and logs it).  An envelope whose file is still the one the snapshot of the last clean stop saw
is taken from it (``snapshot``: with a cold page cache, checking a million files' ``stat``
takes 5 s, reading them 57 s).  Reading, parsing and packing an envelope costs ~25 µs; a
million of them in one process took 45 s, so from ``PARALLEL_FROM`` envelopes on the work is
spread over worker processes (several per core: with a cold page cache the reading waits on the
disk), forked (only while the server has no other thread: a fork copies no thread, and a lock
another thread held would stay held in the child), in chunks of ``CHUNK`` names, and the
results come back in queue-id order.  The server's process then only files what the workers
found, and holds none of the parsing's garbage.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import multiprocessing
import os
import signal
import threading
import zlib
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from itertools import repeat
from typing import Any, NamedTuple

from mxbackup.queue import snapshot
from mxbackup.queue.checkpoint import check_commit, written_since
from mxbackup.queue.envelope import EnvelopeError, Targets, key_for, parse_json, pending_targets
from mxbackup.queue.packed import pack_json, unpack_json
from mxbackup.queue.snapshot import Entry, Snapshot, Stamp, stamp_of
from mxbackup.queue.tries import Logged, replay

PARALLEL_FROM = 20_000
# Reading is bound by the disk when the page cache is cold (after a reboot): a million
# envelopes on the 2-core VM took 84.5 s with 2 workers, 55.7 s with 6, 50.8 s with 8, 50.4 s
# with 12; warm, 12.7-14.0 s with any of them.  So more readers than cores.
READERS_PER_CORE = 4
MAX_READERS = 8
CHUNK = 10_000
BACKGROUND_NICE = 10  # the readers' niceness while the server accepts mail
_PR_SET_PDEATHSIG = 1  # prctl(2)


class Chunk(NamedTuple):
    """Envelopes of env/ as read, in queue-id order: packed, with what the scheduler files
    them by, in lists it takes as they are (a million filed one by one cost 9 s)."""

    qids: list[str]  # the readable ones
    packed: list[bytes]  # their envelopes, packed (``queue.packed``)
    held: list[str]
    at: dict[str, tuple[list[str], list[int], list[float]]]  # target -> (ids, recipients
    # pending there, their earliest next attempt), but for those
    interrupted: list[tuple[str, str, int]]  # (id, target, recipients): a crash interrupted a try
    unreadable: list[tuple[str, str, bool]]  # (id, why, recent: a commit a crash may have torn)
    checked: list[str]  # recent commits checked and found whole (``checkpoint``)
    from_snapshot: int = 0  # how many were taken from the snapshot of the last stop


def read_one(
    env_dir: int,
    new_dir: str,
    qid: str,
    recent: float | None,
    counts: dict[int, int] | None,
    kept: Entry | None = None,
) -> tuple[bytes, bool, Targets, bool]:
    """The envelope ``env/<qid>``: packed, held, its targets, and whether it was checked as a
    recent commit (written at ``recent`` or later, see ``checkpoint``: its message must have
    the size and CRC it records); with the try log's ``counts`` for it applied
    (``tries.replay``).  Taken from ``kept`` (its record in the snapshot of the last stop)
    when the file is still the one the snapshot saw, is not recent and has no counts.
    EnvelopeError if it is unreadable or torn."""
    try:
        if kept is not None and not counts and _unchanged(env_dir, qid, kept.stamp, recent):
            try:
                data = parse_json(unpack_json(kept.packed))
                return kept.packed, bool(data.get("held")), _targets_of(qid, data), False
            except (zlib.error, TypeError, ValueError, AttributeError, EnvelopeError):
                pass  # read from the file, as if the snapshot had no record of it
        raw, mtime = read_at(env_dir, qid)
        if counts:
            raw = replay(raw, counts)
        data = parse_json(raw)
        targets = _targets_of(qid, data)
        checked = data.get("crc") is not None and recent is not None and mtime >= recent
        if checked:
            check_commit(os.path.join(new_dir, qid), data["size"], data["crc"])
    except (OSError, TypeError, ValueError, AttributeError) as e:
        raise EnvelopeError(str(e)) from None
    return pack_json(raw), bool(data.get("held")), targets, checked


def _unchanged(env_dir: int, qid: str, stamp: Stamp, recent: float | None) -> bool:
    """``env/<qid>`` is the file the snapshot saw, and no round a crash may have torn wrote it."""
    now = stamp_of(env_dir, qid)
    return now == stamp and (recent is None or stamp.mtime_ns < recent * 1e9)


def _targets_of(qid: str, data: dict) -> Targets:
    if data["id"] != qid:
        raise EnvelopeError(f"envelope names {data['id']!r}")
    return pending_targets(
        (
            key_for(r["route"], r["address"]),
            r.get("state", "pending"),
            float(r.get("next_attempt", 0.0)),
            bool(r.get("inflight")),
        )
        for r in data["recipients"]
    )


def read_chunk(
    env_path: str,
    names: list[str],
    recent: float | None = None,
    logged: Logged | None = None,
    in_snapshot: tuple[str, tuple[int, int]] | None = None,
    own_process: bool = True,
) -> Chunk:
    """The envelopes ``names`` (sorted); ``in_snapshot``: the snapshot's path and the span of
    its records for them (``snapshot.Snapshot.span``); ``own_process``: nothing else runs in
    this process meanwhile (the cyclic GC is paused; not in a running server's thread)."""
    new_dir = os.path.join(os.path.dirname(env_path), "new")
    env_dir = os.open(env_path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        with _collections_paused(own_process):
            return _read_into(env_dir, new_dir, names, recent, logged, in_snapshot)
    finally:
        os.close(env_dir)


@contextlib.contextmanager
def _collections_paused(own_process: bool) -> Iterator[None]:
    """Many small objects, no cycles: no full collections meanwhile (only where nothing
    else runs in the process)."""
    collecting = own_process and gc.isenabled()
    if collecting:
        gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()


def _read_into(
    env_dir: int,
    new_dir: str,
    names: list[str],
    recent: float | None,
    logged: Logged | None,
    in_snapshot: tuple[str, tuple[int, int]] | None,
) -> Chunk:
    chunk, taken = Chunk([], [], [], {}, [], [], []), 0
    entries = {}
    if in_snapshot and names:
        entries = snapshot.entries(*in_snapshot, names[0], names[-1])
    for qid in names:
        try:
            counts = logged.get(qid) if logged else None
            kept_one = entries.get(qid)
            packed, held, targets, checked = read_one(
                env_dir, new_dir, qid, recent, counts, kept_one
            )
        except EnvelopeError as e:
            chunk.unreadable.append((qid, str(e), written_since(env_dir, qid, recent)))
            continue
        taken += kept_one is not None and packed is kept_one.packed
        chunk.qids.append(qid)
        chunk.packed.append(packed)
        if checked:
            chunk.checked.append(qid)
        if held:
            chunk.held.append(qid)
        for key, count, when, interrupted in targets:
            if interrupted:
                chunk.interrupted.append((qid, key, count))
                continue
            at = chunk.at.get(key)
            if at is None:
                at = chunk.at[key] = ([], [], [])
            at[0].append(qid)
            at[1].append(count)
            at[2].append(when)
    return chunk._replace(from_snapshot=taken)


def readers() -> int:
    """Reader processes for this process's cores: ``READERS_PER_CORE`` per core (at most
    ``MAX_READERS``, but one per core at least); none on one core."""
    cores = len(os.sched_getaffinity(0))
    return max(cores, min(MAX_READERS, READERS_PER_CORE * cores)) if cores > 1 else 0


def workers_for(count: int, workers: int = 0) -> int:
    """Worker processes to read ``count`` envelopes with (0: in this process): ``workers``,
    by default ``READERS_PER_CORE`` per core this process may use (at most ``MAX_READERS``,
    but one per core at least; none on one core), when there are many and forking is safe."""
    workers = workers or readers()
    if workers < 2 or count < PARALLEL_FROM or threading.active_count() > 1:
        return 0
    return workers


Span = tuple[str, tuple[int, int]]  # the snapshot's path, the span of a chunk's records
Batch = tuple[list[str], Span | None]  # a chunk's names (``CHUNK``), its snapshot records


def batches_of(names: list[str], kept: Snapshot | None, size: int = 0) -> list[Batch]:
    """``names`` (sorted) in chunks of ``size`` (default ``CHUNK``), each with its span of
    ``kept``."""
    size = size or CHUNK
    batches = [names[start : start + size] for start in range(0, len(names), size)]
    return [(b, (kept.path, kept.span(b[0], b[-1])) if kept else None) for b in batches]


def read_all(
    env_path: str,
    names: list[str],
    workers: int,
    recent: float | None = None,
    logged: Logged | None = None,
    kept: Snapshot | None = None,
) -> Iterator[Chunk]:
    """``read_chunk`` of the names, ``CHUNK`` at a time, in order; by ``workers`` forked
    processes (see ``workers_for``), or in this process (0 or 1, or if the workers fail:
    killed, or no process pool on this system); ``kept``: the snapshot of the last stop."""
    batches = batches_of(names, kept)
    done = 0
    if workers >= 2:
        context: Any = multiprocessing.get_context("fork")
        start = (os.getpid(), 0)
        try:
            with ProcessPoolExecutor(
                workers, mp_context=context, initializer=start_reader, initargs=start
            ) as pool:
                mine = [_logged_for(batch, logged) for batch, _ in batches]
                results = pool.map(
                    read_chunk,
                    repeat(env_path),
                    [batch for batch, _ in batches],
                    repeat(recent),
                    mine,
                    [span for _, span in batches],
                )
                for (batch, _), chunk in zip(batches, results, strict=True):
                    yield with_names(chunk, batch)
                    done += 1
        except (BrokenProcessPool, OSError, NotImplementedError):
            pass  # the rest in this process
    for batch, span in batches[done:]:
        yield read_chunk(env_path, batch, recent, logged, span)


def background_pool(workers: int) -> ProcessPoolExecutor | None:
    """``workers`` processes for reading beside a running server (``queue.background``):
    started afresh (spawn, ~0.1 s each), for a fork would copy none of the reactor's threads
    and could inherit a lock one of them holds; None if there is no process pool here."""
    if workers < 2:
        return None
    try:
        context = multiprocessing.get_context("spawn")
        start = (os.getpid(), BACKGROUND_NICE)
        return ProcessPoolExecutor(
            workers, mp_context=context, initializer=start_reader, initargs=start
        )
    except (OSError, NotImplementedError, ValueError):
        return None


def start_reader(server: int, niceness: int) -> None:
    """In each reader process, first: it dies with the server's process (``server``), for a
    pool's worker holds both ends of its own pipe and would wait for ever after a ``kill -9``
    of the server (Linux's parent-death signal; it checks that the server did not die before
    the signal was asked for); and a reader beside a running server gives way to it
    (``niceness``: eight readers on two cores took most of the CPU from the reactor while the
    queue loaded).  Where either is not allowed (a system call filter), it goes without."""
    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)
    if prctl is not None:  # the signal comes when the *thread* that started this process
        # ends: pools are started from the server's main thread (``BackgroundLoad``)
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != server:
        os._exit(1)
    if niceness:
        try:
            os.nice(niceness)
        except OSError:
            pass


def submit(
    pool: ProcessPoolExecutor,
    env_path: str,
    batch: Batch,
    recent: float | None,
    logged: Logged | None,
) -> Future:
    """``read_chunk`` of ``batch`` in ``pool``: a Future of the Chunk (``with_names`` it)."""
    names, span = batch
    return pool.submit(read_chunk, env_path, names, recent, _logged_for(names, logged), span)


def _logged_for(names: list[str], logged: Logged | None) -> Logged | None:
    """What a worker needs of the try log: the entries of its names (sent through a pipe)."""
    if not logged:
        return None
    return {name: logged[name] for name in names if name in logged}


def with_names(chunk: Chunk, names: list[str]) -> Chunk:
    """``chunk`` (from a worker) naming its messages with the strings of ``names``: the ids
    that came back through the pipe are copies, freed at once, instead of a second million
    strings kept while these are freed (memory the process keeps but cannot use)."""
    own = {name: name for name in names}
    at = {
        key: ([own[q] for q in qids], counts, whens)
        for key, (qids, counts, whens) in chunk.at.items()
    }
    return Chunk(
        [own[q] for q in chunk.qids],
        chunk.packed,
        [own[q] for q in chunk.held],
        at,
        [(own[q], key, count) for q, key, count in chunk.interrupted],
        chunk.unreadable,
        [own[q] for q in chunk.checked],
        chunk.from_snapshot,
    )


def read_at(dir_fd: int, name: str) -> tuple[bytes, float]:
    """The whole file ``name`` in the directory ``dir_fd`` and its mtime (cheaper than
    open() per file: a million of them are read at start-up)."""
    fd = os.open(name, os.O_RDONLY, dir_fd=dir_fd)
    try:
        mtime = os.fstat(fd).st_mtime
        data = os.read(fd, 1 << 16)
        if len(data) < 1 << 16:
            return data, mtime
        chunks = [data]
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks), mtime
    finally:
        os.close(fd)
