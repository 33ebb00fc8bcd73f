"""Counters for monitoring: one object, shared by the stages, exposed later by metrics.

Pure: no reactor.  Gauges (queue depth per target, oldest message) are computed on demand by
the scheduler, so nothing here has to be kept in step with the queue.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field


@dataclass
class Stats:
    accepted: int = 0
    refused: Counter[str] = field(default_factory=Counter)  # by reply code
    delivered: int = 0
    deferred: int = 0
    bounced: int = 0
    dsn_sent: int = 0
    # recipient verification and per-route policy (issue 11)
    callouts: Counter[str] = field(default_factory=Counter)  # accepted/refused/unreachable
    verify_cache: Counter[str] = field(default_factory=Counter)  # hit / miss
    store_errors: int = 0
    refusals: Counter[str] = field(default_factory=Counter)  # by reason (the link's name)
    check_results: Counter[tuple[str, str]] = field(default_factory=Counter)  # (check, result)
