"""What ``mxbackup status``, ``queue summary`` and ``queue list`` show: computed from the
scheduler's live state on demand (nothing here is kept in step with the queue).

Times are absolute (seconds since the epoch, as the clock gives them) or ``None``.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Generator
from typing import Any

from mxbackup.outbound.health import target_key
from mxbackup.outbound.policy import RetryRule
from mxbackup.outbound.scheduler import Scheduler
from mxbackup.queue.envelope import Envelope, Recipient
from mxbackup.turns import at_once

# qshape's buckets: minutes, each twice the one before; the last is "older than that".
BUCKETS = (5, 10, 20, 40, 80, 160, 320, 640, 1280)
SUMMARY_SLICE = 5_000  # messages counted per turn of the reactor (``summary_steps``)


def retries_left(rule: RetryRule, rcpt: Recipient) -> int:
    """Retries still to come after the tries made (``retries`` counts after the first)."""
    return max(0, rule.retries - max(rcpt.attempts - 1, 0))


def gives_up_at(rule: RetryRule, envelope: Envelope, rcpt: Recipient) -> float | None:
    """When the recipient is returned to its sender if every try fails: its last retry's
    time (from its next attempt, at the route's intervals), or the queue lifetime's end."""
    if rcpt.state != "pending":
        return None
    when = rcpt.next_attempt or envelope.received_at  # the next try's time
    later = range(rcpt.attempts + 1, rule.retries + 1)  # the intervals after it
    if rule.backoff == 1:
        when += len(later) * rule.interval(1)
    else:
        when += sum(rule.interval(attempts) for attempts in later)
    if rule.max_queue_lifetime:
        when = min(when, envelope.received_at + rule.max_queue_lifetime)
    return when


class View:
    """The scheduler's state as the administrator's commands show it."""

    def __init__(self, scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.now = scheduler.clock.seconds()

    def next_try(self, envelope: Envelope, rcpt: Recipient) -> tuple[float | None, str]:
        """When the recipient will really be tried, and why then: a down target's mail
        waits for the probe (its nominal attempts fail without connecting)."""
        key = target_key(rcpt)
        sched = self.scheduler
        if rcpt.state != "pending":
            return None, rcpt.state
        if envelope.held:
            return None, "held"
        if sched.pauses.paused(key):
            return None, "paused"
        if sched.backlog.inflight.busy(envelope.id) and rcpt.inflight:
            return self.now, "in flight"
        target = sched.health.targets.get(key)
        if target is not None and target.down:
            return max(target.next_probe, self.now), "target down: at its probe"
        return max(rcpt.next_attempt, self.now), "scheduled"

    def recipient(self, envelope: Envelope, rcpt: Recipient) -> dict[str, Any]:
        rule = self.scheduler.recorder.rule(target_key(rcpt))
        when, why = self.next_try(envelope, rcpt)
        return {
            "retries_left": retries_left(rule, rcpt),
            "next_try": when,
            "next_try_why": why,
            "gives_up_at": gives_up_at(rule, envelope, rcpt),
            # Why its target is down now (the last failed attempt or probe: newer than the
            # recipient's last_reply while the target stays down).
            "target_reason": self.scheduler.health.reason(target_key(rcpt))
            if rcpt.state == "pending"
            else "",
        }

    # -- mxbackup status -------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        return at_once(self.status_steps())

    def status_steps(self) -> Generator[None, None, dict[str, Any]]:
        """``status``: a big target's recipients and oldest message are found a slice per
        turn of the reactor (``Backlog.SCAN_SLICE``)."""
        sched = self.scheduler
        routes = {r.domain: r for r in sched.config.routes}
        keys = list(routes) + sorted(
            k for k in set(sched.backlog.keys()) | set(sched.health.targets) if k not in routes
        )
        targets = []
        for key in keys:
            targets.append((yield from self.target_steps(key, routes.get(key))))
        status: dict[str, Any] = {
            "now": self.now,
            "paused": sched.pauses.everything,
            "queue": len(sched.queue),
            "targets": targets,
        }
        loading = sched.load_progress()
        if loading is not None:  # a big queue still being read: ``queue`` counts what is
            status["loading"] = loading
        return status

    def target_steps(self, key: str, route: Any) -> Generator[None, None, dict[str, Any]]:
        sched = self.scheduler
        _, envelope = yield from sched.backlog.oldest_envelope_steps(key)
        health = sched.health.targets.get(key)
        if health is None:
            state, since = "unknown", None
        elif health.down:
            state, since = "down", health.down_since
        else:
            state, since = "up", None
        info: dict[str, Any] = {
            "target": key,
            "route": route.domain if route is not None else None,
            "hosts": [f"{t.host}:{t.port}" for t in route.targets] if route is not None else [],
            "state": state,
            "down_since": since,
            "last_error": health.last_error if health is not None else "",
            "next_probe": health.next_probe if health is not None and health.down else None,
            "paused": sched.pauses.paused(key),
            "messages": sched.backlog.depth(key),
            "recipients": sched.backlog.recipients_at(key),
            "oldest": None,
        }
        # The oldest message by id (ids sort by arrival): one envelope read, not all of them
        # (kept packed, a million would take seconds to read).
        at_key = [r for r in envelope.pending() if target_key(r) == key] if envelope else []
        if envelope is not None and at_key:
            rcpt = at_key[0]
            info["oldest"] = {
                "id": envelope.id,
                "received_at": envelope.received_at,
                "age": self.now - envelope.received_at,
                **self.recipient(envelope, rcpt),
            }
        return info

    # -- mxbackup queue summary ------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        """Messages per target by age (qshape): ``buckets`` are upper bounds in minutes."""
        return at_once(self.summary_steps())

    def summary_steps(self) -> Generator[None, None, dict[str, Any]]:
        """``summary``, yielding after every ``SUMMARY_SLICE`` messages (``turns``)."""
        rows: dict[str, list[int]] = {}
        arrival = self.scheduler.queue.arrival  # without unpacking what is packed
        backlog, now, counted = self.scheduler.backlog, self.now, 0
        for key in sorted(backlog.keys()):
            row = [0] * (len(BUCKETS) + 1)
            for qid in backlog.messages_at(key):  # a new list: the dict may change between turns
                row[bisect_right(BUCKETS, (now - arrival(qid)) / 60)] += 1
                counted += 1
                if counted % SUMMARY_SLICE == 0:
                    yield
            rows[key] = row
        total = [sum(column) for column in zip(*rows.values(), strict=True)] if rows else []
        return {"buckets": list(BUCKETS), "targets": rows, "total": total}
