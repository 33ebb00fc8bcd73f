"""The inbound checks' metrics (see ``ops/metrics.py``): every lookup or verification by
check and result.  The checks' refusals are in ``rcpt_refusals_total{reason}`` (dnsbl, spf,
greylisting), next to the other policy links'."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, Metric


def check_metrics(stats: Any) -> Iterator[Metric]:
    family = CounterMetricFamily(
        "mxbackup_check_results",
        "Inbound check outcomes: dnsbl listed/clean/error, spf and dkim results (pass, fail, "
        "...), arc chain (none/pass/fail), greylisting new/early/passed/known/error.",
        labels=["check", "result"],
    )
    for (check, result), count in sorted(stats.check_results.items()):
        family.add_metric([check, result], count)
    yield family
