"""Long work on the reactor, one slice per turn: between two slices the reactor serves its
clients, so a command over a million queued messages never stalls acceptance for long.

The work is a generator that yields between its slices and returns its result; nothing here
imports the reactor (the clock is passed in)."""

from __future__ import annotations

from collections.abc import Generator
from typing import Any, TypeVar

from twisted.internet import defer

T = TypeVar("T")


def in_turns(clock: Any, steps: Generator[None, None, T]) -> defer.Deferred:
    """Run ``steps`` (a generator that yields between slices of its work and returns its
    result) a slice per turn of ``clock`` (``callLater(0)``), the first slice at once.
    Fires with what it returns, or fails with what it raises.  Cancelling it (its client
    went away) runs no further slice and closes ``steps``."""
    pending: list[Any] = []  # the next slice's call, while there is one

    def cancel(_: defer.Deferred) -> None:
        while pending:
            pending.pop().cancel()
        steps.close()

    done: defer.Deferred = defer.Deferred(canceller=cancel)

    def step() -> None:
        pending.clear()
        try:
            next(steps)
        except StopIteration as end:
            done.callback(end.value)
        except Exception:  # noqa: BLE001 - the command's failure, for its caller
            done.errback()
        else:
            pending.append(clock.callLater(0, step))

    step()
    return done


def at_once(steps: Generator[None, None, T]) -> T:
    """Run ``steps`` to the end now, and return its result."""
    while True:
        try:
            next(steps)
        except StopIteration as end:
            return end.value
