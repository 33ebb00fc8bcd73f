"""The spool process, seen from the server: the spool's rounds (``rounds.run_round``) run
in a child process, the program in ``spoolchild`` (which gathers into one round the requests
waiting for it: the server sends each change as it comes, several may be outstanding).

Why a process and not a thread: a round makes a dozen system calls per message (open,
write, close, rename, syncfs), and a worker thread must win the GIL back after each one from
the reactor thread, which is busy with SMTP.  Measured on the 2-core machine at 10
concurrent clients, a round that takes 0.6 ms alone took 4 ms in a thread (median of 1,100
rounds); the 250 waits for it.  The child has a GIL of its own.

The child is plain Python with no reactor and no Twisted (see ``spoolchild`` for its
protocol).  Answers come in the order of the requests; once the conversation is broken (an
answer that cannot be read or was not asked for), nothing more the child says is believed:
with several requests outstanding, a later answer could otherwise be taken for another's.

Failure and shutdown: the child dies with the server (``PR_SET_PDEATHSIG``), so a crash of
one is a crash of both, which the spool's commit protocol covers.  It ignores SIGINT, SIGHUP
and SIGTERM (a terminal's or systemd's signals to the whole group): it ends with the server's
process, or when its stdin closes, after the round in hand.  If it dies, every waiting round
fails (the clients get a 4xx, nothing was acknowledged) and the next round starts a new
child.
"""

from __future__ import annotations

import os
import pickle
import sys
from collections import deque
from typing import Any

from twisted.internet import defer, error, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from mxbackup.queue.rounds import FRAME, run_round

log = Logger(namespace="mxbackup.spoolproc")

# The child's program: imports only ``spoolchild`` and ``rounds`` (run with -m, the module
# would be imported a second time when the first request names its classes).
_CHILD = "import sys; from mxbackup.queue.spoolchild import main; main(sys.argv)"
_PACKAGE_PARENT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def spawn_child(reactor: Any, proto: protocol.ProcessProtocol, program: str) -> Any:
    """Start one of our children (the spool and prefetch processes): ``python -c program
    <the server's pid>``, this package on its path after whatever the server's
    ``PYTHONPATH`` says, its stdin and stdout pipes to ``proto``, its stderr the server's."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (env.get("PYTHONPATH", ""), _PACKAGE_PARENT) if p
    )
    return reactor.spawnProcess(
        proto,
        sys.executable,
        [sys.executable, "-c", program, str(os.getpid())],
        env=env,
        childFDs={0: "w", 1: "r", 2: 2},
    )


class SpoolProcessError(OSError):
    """The spool process failed or went away; the round's outcome is unknown."""


class SpoolStopping(SpoolProcessError):
    """The server is stopping: the round was not started (nothing of it was written)."""


STOP_GRACE = 10.0  # seconds the child may take, at the server's stop, to finish its rounds


class SpoolProcess(protocol.ProcessProtocol):
    """A ``RoundRunner`` for ``Spool``: each round runs in the spool process.

    At the server's stop (``shutdown``) it takes no new round and the child finishes every
    round it was sent before it exits, while the reactor still reads its answers: a clean
    stop loses no outcome that was being recorded and logs no error.  Otherwise the child
    lives as long as the server's process and ends with it (the parent-death signal)."""

    # Each request is sent as it comes; the child runs every request waiting in its pipe
    # as one round (``spoolchild.serve``), so ``Spool`` need not hold changes back.
    merges = True

    def __init__(self, reactor: Any) -> None:
        self._reactor = reactor
        self._transport: Any = None
        self._waiting: deque[defer.Deferred] = deque()
        self._buffer = bytearray()
        self._ended: defer.Deferred | None = None
        self._stopping = False  # no new round (the server is stopping)
        self._closed_stdin = False  # we ended its input: its output ends next, quietly
        self._killing = False  # the conversation broke: it is being killed

    def start(self) -> None:
        """Start the child now, so the first round does not wait for Python to start (it
        did: 50 clients waited 110 ms for their first 250).  A failure is logged; the next
        round tries again.  Only from the reactor thread: the parent-death signal is tied
        to the thread that started the child."""
        try:
            self._ensure_running()
        except OSError as e:
            log.error("cannot start the spool process: {e}", e=str(e))

    def __call__(self, fn: Any, *args: Any) -> defer.Deferred:
        """Run ``rounds.run_round(*args)`` in the child (the only call it serves)."""
        if fn is not run_round:
            return defer.fail(TypeError(f"the spool process only runs rounds, not {fn!r}"))
        if self._stopping:
            return defer.fail(SpoolStopping(0, "spool process: the server is stopping"))
        if self._killing:  # its end is near: a new child takes rounds once it is gone
            return defer.fail(SpoolProcessError(0, "spool process: being restarted"))
        try:
            self._ensure_running()
            payload = pickle.dumps(args, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as e:  # noqa: BLE001 - a round that cannot be sent fails, 4xx
            return defer.fail(SpoolProcessError(getattr(e, "errno", 0) or 0, f"spool process: {e}"))
        self._transport.writeSequence([FRAME.pack(len(payload)), payload])
        d: defer.Deferred = defer.Deferred()
        self._waiting.append(d)  # answers come in the order of the requests
        return d

    def _ensure_running(self) -> None:
        if self._transport is not None:
            return
        self._buffer.clear()
        self._closed_stdin = False
        self._transport = spawn_child(self._reactor, self, _CHILD)
        self._ended = defer.Deferred()
        log.info("spool process started (pid {pid})", pid=self._transport.pid)

    # -- ProcessProtocol -------------------------------------------------------------------
    def childDataReceived(self, childFD: int, data: bytes) -> None:
        if self._killing:
            return  # not believed any more (see the module's docstring)
        self._buffer += data
        while len(self._buffer) >= FRAME.size:
            (size,) = FRAME.unpack_from(self._buffer)
            if len(self._buffer) < FRAME.size + size:
                return
            frame = bytes(self._buffer[FRAME.size : FRAME.size + size])
            del self._buffer[: FRAME.size + size]
            if not self._waiting:
                self._broken("an answer nobody asked for")
                return
            d = self._waiting.popleft()
            try:
                status, value = pickle.loads(frame)
            except Exception as e:  # noqa: BLE001 - the round's outcome is unknown
                d.errback(SpoolProcessError(0, f"spool process: unreadable answer: {e}"))
                self._broken(f"unreadable answer: {e}")
                return
            if status == "ok":
                d.callback(value)
            else:
                d.errback(SpoolProcessError(0, f"spool process: {value}"))

    def childConnectionLost(self, childFD: int) -> None:
        if childFD != 1 or self._transport is None:
            return
        if self._closed_stdin and not self._waiting:
            return  # it answered everything and ends, as asked
        self._broken("its answers stopped")  # it cannot answer any more: end it

    def _broken(self, why: str) -> None:
        """The conversation with the child is lost: kill it, so processEnded fails
        everything that waits (a 4xx for each client) and the next round starts anew."""
        log.error("spool process: {why}; killing it", why=why)
        self._killing = True  # until processEnded: every waiting round fails there
        self._buffer.clear()
        try:
            self._transport.signalProcess("KILL")
        except error.ProcessExitedAlready:
            pass

    def processEnded(self, reason: Failure) -> None:
        ended, self._ended = self._ended, None
        self._transport = None
        self._killing = False
        waiting, self._waiting = self._waiting, deque()
        if waiting or not reason.check(error.ProcessDone):
            log.error("spool process ended: {reason}", reason=reason.getErrorMessage())
        for d in waiting:
            d.errback(SpoolProcessError(0, f"spool process ended: {reason.getErrorMessage()}"))
        if ended is not None:
            ended.callback(None)

    def stop(self) -> defer.Deferred | None:
        """Close the child's stdin: it finishes the rounds it was sent, then exits."""
        if self._transport is None or self._ended is None:
            return None
        ended = self._ended
        self._closed_stdin = True
        self._transport.closeStdin()
        return ended

    def shutdown(self) -> defer.Deferred:
        """The server stops: no new round from now on; fires once the child has finished
        what it was sent and exited (killed after ``STOP_GRACE`` seconds: its rounds then
        fail, 4xx, and recovery at the next start sorts out what they left)."""
        self._stopping = True
        ended = self.stop()
        if ended is None:
            return defer.succeed(None)
        finished: defer.Deferred = defer.Deferred()
        timer = self._reactor.callLater(STOP_GRACE, self._broken, "it did not finish in time")

        def done(result: object) -> object:
            if timer.active():
                timer.cancel()
            finished.callback(None)
            return result

        ended.addBoth(done)
        return finished
