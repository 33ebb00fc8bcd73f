"""Giving the C heap's free pages back to the system (glibc's ``malloc_trim``).

Loading a million queued messages frees a lot as it goes (the lists read from the reader
processes, the directory listings, tables of dicts and sets that grew): glibc keeps such
memory in its heap when it is not at the heap's top, still counted in the resident size
(measured after loading a million in-process: 48 MB free inside a 94 MB heap; one trim,
2 ms, took VmRSS from 432.6 to 395.6 MB; twistd and its spool process with a million queued,
ready: 473.4 MB before, 435.5-440.6 MB with the trim).  ``malloc_trim(0)`` returns every
whole free page (``MADV_DONTNEED``): nothing in use moves, nothing is lost, the next
allocations simply fault fresh pages in.  Not glibc (musl, macOS): nothing is done.

No reactor here: ``trimming`` is given the clock (``service``: at start-up, after the
queue's load, then every ``EVERY`` seconds; a trim costs a few milliseconds).  A big queue
read in the background is trimmed as it goes too (``queue.background.TRIM_EVERY``): its
peak with a million had been 33-37 MB above what it left.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable
from typing import Any

from twisted.application.internet import TimerService

EVERY = 60.0  # seconds between trims while the server runs (a listing, a drain free a lot)


def _trimmer() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim`` from the symbols the process already has (no library search:
    ``ctypes.util.find_library`` runs ``ldconfig``)."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return trim  # type: ignore[no-any-return]


_TRIM = _trimmer()


def give_back() -> bool:
    """Return the heap's whole free pages to the system; whether any were (False where there
    is no ``malloc_trim``)."""
    return bool(_TRIM(0)) if _TRIM is not None else False


def trimming(clock: Any) -> TimerService:
    """A service that calls ``give_back`` when it starts and every ``EVERY`` seconds."""
    service = TimerService(EVERY, give_back)
    service.clock = clock
    return service
