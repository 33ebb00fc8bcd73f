"""The recipient-verification and per-route RCPT policy metrics (see ``ops/metrics.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric


def _counter(name: str, doc: str, label: str, values: Any) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=[label])
    for key, count in sorted(values.items()):
        family.add_metric([key], count)
    return family


def verification_metrics(stats: Any, scheduler: Any) -> Iterator[Metric]:
    yield _counter(
        "mxbackup_verify_callouts", "Recipient callouts, by outcome.", "outcome", stats.callouts
    )
    yield _counter(
        "mxbackup_verify_cache", "Verification cache lookups, by result.", "result",
        stats.verify_cache,
    )  # fmt: skip
    yield CounterMetricFamily(
        "mxbackup_state_store_errors",
        "State store operations that failed (unavailable).",
        value=stats.store_errors,
    )
    yield _counter(
        "mxbackup_rcpt_refusals", "RCPT refusals by the policy links, by reason.", "reason",
        stats.refusals,
    )  # fmt: skip
    queued = GaugeMetricFamily(
        "mxbackup_route_queued_messages",
        "Queued messages per route (what max_queued_messages counts).",
        labels=["route"],
    )
    for key, depth in sorted(scheduler.depth_by_target().items()):
        if not key.startswith("mx:"):  # a route's target is keyed by the route's domain
            queued.add_metric([key], depth)
    yield queued
