"""The spool process's program: it reads rounds from the server on its stdin and answers on
its stdout (``rounds``: what a round does; ``spoolproc``: the server's side).

Started as ``python -c "...mxbackup.queue.spoolchild import main..." PID``: plain Python, no
Twisted, so it stays small and starts fast.  A frame is a 4-byte big-endian length and a
pickle: the request is the arguments of a ``run_round``, the answer ``("ok", result)`` or
``("error", text)``, one per request, in order.  Both ends are this program's, over pipes only
they hold.  The server sends each change as it comes; every request waiting in the pipe when
a round ends is gathered into the next round (one sync for all).  The child dies with its
parent (``PR_SET_PDEATHSIG``), ignores SIGINT, SIGHUP and SIGTERM (signals to the whole
process group), and otherwise ends when its stdin closes, after the round in hand.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import pickle
import select
import signal
import sys
from typing import Any, BinaryIO

from mxbackup.queue.rounds import FRAME, run_round

_PR_SET_PDEATHSIG = 1


# Requests gathered into one round at most (a drain's removals come fast); a request may
# carry several changes (``Spool.together``: a connection's batch of up to 50 outcomes).
MAX_BATCH = 2_000
PIPE_SIZE = 1 << 20  # octets: a round of 50 commits of 5 KB, or ten of 100 KB, in one write


def widen_pipe(fd: int, size: int = PIPE_SIZE) -> int:
    """Make the pipe at ``fd`` hold ``size`` octets (or the most the system allows an
    unprivileged process: ``/proc/sys/fs/pipe-max-size``); its new size, or 0 if it is no pipe
    or cannot grow.  With the default 64 KB, a round's request of more than 64 KB reached
    the spool process a pipe-full per turn of the server's busy reactor: at 50 clients the
    spool process waited for its requests ~40 % of the time."""
    set_size = getattr(fcntl, "F_SETPIPE_SZ", None)
    if set_size is None:
        return 0
    try:
        with open("/proc/sys/fs/pipe-max-size") as f:
            size = min(size, int(f.read()))
    except (OSError, ValueError):
        pass
    try:
        return fcntl.fcntl(fd, set_size, size)
    except OSError:
        return 0


class _Requests:
    """The server's requests as they come: each batch is every complete frame already
    waiting, at least one (the rounds they ask for then run as one)."""

    def __init__(self, stream: BinaryIO) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._ended = False
        # Read into one buffer kept for the process's life: a read of PIPE_SIZE into a new
        # bytes object mapped and unmapped a megabyte per request (mmap, mremap, munmap:
        # 10-170 us on the 250's path).
        self._space = memoryview(bytearray(PIPE_SIZE))

    def batch(self) -> list[bytes]:
        """The next frames (at most ``MAX_BATCH``); [] at the end of input."""
        frames = self._frames(MAX_BATCH)
        while not frames and self._fill():
            frames = self._frames(MAX_BATCH)
        while len(frames) < MAX_BATCH and not self._ended and _more_waiting(self._stream):
            if not self._fill():
                break
            frames += self._frames(MAX_BATCH - len(frames))
        return frames

    def _fill(self) -> bool:
        got = self._stream.readinto(self._space)  # raw: what is there, or wait for some
        if not got:
            self._ended = True
            return False
        self._buffer += self._space[:got]
        return True

    def _frames(self, limit: int) -> list[bytes]:
        frames, buffer = [], self._buffer
        while len(frames) < limit and len(buffer) >= FRAME.size:
            (size,) = FRAME.unpack_from(buffer)
            if len(buffer) < FRAME.size + size:
                break
            frames.append(bytes(buffer[FRAME.size : FRAME.size + size]))
            del buffer[: FRAME.size + size]
        return frames


def _more_waiting(stream: BinaryIO) -> bool:
    """Whether reading ``stream`` now would not wait (an in-memory stream: always)."""
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return True
    return bool(select.select([fd], [], [], 0)[0])


Answer = tuple[str, Any]  # ("ok", result) or ("error", text)


def _answers(frames: list[bytes]) -> list[Answer]:
    """Each request's answer, in order: consecutive rounds of the same spool run as one
    (``run_round`` over all their operations, then its results shared out); anything else
    is answered on its own (a frame that is no round: with its error)."""
    answers: list[Answer] = []
    group: list[tuple[str, str, list]] = []
    for body in frames:
        request = _load(body)
        if _is_round(request) and (not group or request[:2] == group[0][:2]):
            group.append(request)
            continue
        answers += _run_together(group)
        group = [request] if _is_round(request) else []
        if not group:
            answers.append(_run_alone(request))
    return answers + _run_together(group)


def _is_round(request: Any) -> bool:
    return (
        isinstance(request, tuple)
        and len(request) == 3
        and isinstance(request[0], str)
        and isinstance(request[1], str)
        and isinstance(request[2], list)
    )


def _load(body: bytes) -> Any:
    try:
        return pickle.loads(body)
    except Exception as e:  # noqa: BLE001 - a frame that is no request
        return _Unreadable(f"{type(e).__name__}: {e}")


class _Unreadable(str):
    """What could not be unpickled, and why."""


def _run_together(group: list[tuple[str, str, list]]) -> list[Answer]:
    if not group:
        return []
    root, sync = group[0][0], group[0][1]
    try:
        results = run_round(root, sync, [op for _, _, ops in group for op in ops])
    except Exception as e:  # noqa: BLE001 - reported to the parent, which fails them all
        return [("error", f"{type(e).__name__}: {e}")] * len(group)
    answers: list[Answer] = []
    for _, _, ops in group:
        answers.append(("ok", results[: len(ops)]))
        results = results[len(ops) :]
    return answers


def _run_alone(request: Any) -> Answer:
    if isinstance(request, _Unreadable):
        return ("error", str(request))
    try:
        return ("ok", run_round(*request))
    except Exception as e:  # noqa: BLE001 - reported to the parent, which fails the round
        return ("error", f"{type(e).__name__}: {e}")


def serve(stdin: BinaryIO, stdout: BinaryIO) -> None:
    """Answer requests until stdin closes (or nobody reads the answers any more).  The
    requests that wait together in the pipe run as one round (one sync): the server sends
    each change as it comes, and this is where they are gathered."""
    requests = _Requests(stdin)
    while frames := requests.batch():
        out = []
        for answer in _answers(frames):
            payload = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
            out += [FRAME.pack(len(payload)), payload]
        try:
            stdout.write(b"".join(out))
            stdout.flush()
        except BrokenPipeError:
            return  # the server is gone (it stopped while this round ran): nobody waits


def die_with_parent(parent: int, who: str = "spool") -> None:
    """Be killed when ``parent`` (the server) dies; exit now if it is gone already."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            print(f"mxbackup {who}: prctl(PR_SET_PDEATHSIG) failed", file=sys.stderr, flush=True)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def main(argv: list[str]) -> None:
    for signum in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
        signal.signal(signum, signal.SIG_IGN)
    die_with_parent(int(argv[1]))
    for fd in (0, 1):  # the requests, and the answers (both ends share each pipe's buffer)
        widen_pipe(fd)
    with open(0, "rb", buffering=0, closefd=False) as stdin:  # raw: select sees what waits
        serve(stdin, sys.stdout.buffer)
    os._exit(0)  # no flush of sys.stdout at exit: its reader may be gone
