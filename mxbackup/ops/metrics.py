"""A Prometheus endpoint: ``GET /metrics`` in the text exposition format.

Nothing is counted here: each scrape reads the live values from the running server (its
``Stats`` counters, the scheduler's queue and targets, the SMTP factory's connections), so
there is no second set of numbers to keep in step.  Every value is computed in the reactor
thread, like everything else, so a scrape sees one consistent moment.

Metrics (all prefixed ``mxbackup_``)::

    messages_accepted_total                   counter  messages queued (250 after DATA)
    recipients_refused_total{code}            counter  RCPT TO refused, by SMTP reply code
    deliveries_total{outcome}                 counter  delivered / deferred / bounced, by recipient
    dsn_sent_total                            counter  delivery status notifications queued
    queue_messages                            gauge    messages in the queue
    queue_loading_messages                    gauge    queued messages on disk not yet read
                                                       (a big queue read while accepting)
    queue_depth{target}                       gauge    messages waiting for each target
    oldest_message_age_seconds                gauge    age of the oldest queued message
    target_up{target}                         gauge    1 unless the target is known to be down
    target_failures_total{target,reason}      counter  failed attempts/probes, by kind of reason
    target_down_reason{target,reason,error}   gauge    1 per down target: why (the last failure)
    smtp_connections                          gauge    open inbound SMTP connections
    verify_callouts_total{outcome}            counter  callouts: accepted / refused /
                                                       unreachable / shared / skipped_target_down
    verify_cache_total{result}                counter  verification cache hit / miss
    state_store_errors_total                  counter  state store operations that failed
    rcpt_refusals_total{reason}               counter  RCPT refusals by the policy links:
                                                       verify_refused, verify_unknown,
                                                       target_up, route_quota, and the
                                                       checks': dnsbl, spf (at MAIL), greylisting
    check_results_total{check,result}         counter  dnsbl listed/clean/error; spf, dkim, arc
                                                       results; greylisting new/early/passed/...
    route_queued_messages{route}              gauge    queued messages per route (the quota's count)

A target is a route's domain, or ``mx:<domain>`` for mail delivered by MX lookup.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.application import service, strports
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import pages
from twisted.web.resource import IResource, Resource
from twisted.web.server import NOT_DONE_YET, Request, Site

from mxbackup.config import MetricsConfig
from mxbackup.ops.checkmetrics import check_metrics
from mxbackup.ops.verifymetrics import verification_metrics
from mxbackup.outbound.reasons import kind_of
from mxbackup.turns import in_turns

log = Logger(namespace="mxbackup.metrics")


def make_metrics_service(config: MetricsConfig, root: Any, reactor: Any) -> service.IService:
    """The HTTP listener on ``config.listen``.  ``root`` has ``stats``, ``scheduler`` and
    ``smtp_factory`` (an ``MXBackupService``); they are read at each scrape."""
    registry = CollectorRegistry(auto_describe=False)
    collector = MXBackupCollector(root)
    registry.register(collector)
    site = _QuietSite(_Index(_Metrics(registry, collector, reactor)))
    site.noisy = False
    return strports.service(config.listen, site, reactor=reactor)


class MXBackupCollector(Collector):
    def __init__(self, root: Any) -> None:
        self.root = root
        self.oldest_age = 0.0  # found in turns before each scrape (``_Metrics``)

    def collect(self) -> Iterator[Metric]:
        stats = self.root.stats
        scheduler = self.root.scheduler
        yield CounterMetricFamily(
            "mxbackup_messages_accepted", "Messages accepted and queued.", value=stats.accepted
        )
        refused = CounterMetricFamily(
            "mxbackup_recipients_refused",
            "Recipients refused, by SMTP reply code.",
            labels=["code"],
        )
        for code, count in sorted(stats.refused.items()):
            refused.add_metric([code], count)
        yield refused
        deliveries = CounterMetricFamily(
            "mxbackup_deliveries",
            "Delivery attempts per recipient, by outcome.",
            labels=["outcome"],
        )
        for outcome in ("delivered", "deferred", "bounced"):
            deliveries.add_metric([outcome], getattr(stats, outcome))
        yield deliveries
        yield CounterMetricFamily(
            "mxbackup_dsn_sent", "Delivery status notifications queued.", value=stats.dsn_sent
        )

        yield GaugeMetricFamily(
            "mxbackup_queue_messages", "Messages in the queue.", value=len(scheduler.queue)
        )
        loading = scheduler.load_progress()
        yield GaugeMetricFamily(
            "mxbackup_queue_loading_messages",
            "Queued messages on disk not yet read (a big queue is read while accepting mail).",
            value=loading["of"] - loading["loaded"] if loading else 0,
        )
        depth_by_target = scheduler.depth_by_target()
        targets = sorted(set(depth_by_target) | set(scheduler.targets))
        depth = GaugeMetricFamily(
            "mxbackup_queue_depth", "Messages waiting for each target.", labels=["target"]
        )
        up = GaugeMetricFamily(
            "mxbackup_target_up", "1 unless the target is known to be down.", labels=["target"]
        )
        for key in targets:
            depth.add_metric([key], depth_by_target.get(key, 0))
            target = scheduler.targets.get(key)
            up.add_metric([key], 0 if target is not None and target.down else 1)
        yield depth
        yield up
        yield from _reasons(scheduler.health)
        yield GaugeMetricFamily(
            "mxbackup_oldest_message_age_seconds",
            "Age of the oldest message in the queue (0 when empty).",
            value=self.oldest_age,
        )
        yield GaugeMetricFamily(
            "mxbackup_smtp_connections",
            "Open inbound SMTP connections.",
            value=self.root.smtp_factory.connections,
        )
        prefetcher = scheduler.prefetcher
        if prefetcher is not None:
            yield CounterMetricFamily(
                "mxbackup_prefetch_failures",
                "Batches of message files whose warming ended on an unexpected error "
                "(those messages are read from the disk as they are sent).",
                value=prefetcher.failures,
            )
        yield from verification_metrics(stats, scheduler)
        yield from check_metrics(stats)


def _reasons(health: Any) -> Iterator[Metric]:
    """Why targets fail: a counter by kind (``outbound.reasons.kind_of``), and the text."""
    failures = CounterMetricFamily(
        "mxbackup_target_failures",
        "Failed delivery attempts and probes per target, by kind of reason.",
        labels=["target", "reason"],
    )
    for (key, kind), count in sorted(health.reasons.failures.items()):
        failures.add_metric([key, kind], count)
    yield failures
    down = GaugeMetricFamily(
        "mxbackup_target_down_reason",
        "1 for each down target, with why (its last failed attempt or probe).",
        labels=["target", "reason", "error"],
    )
    for target in sorted(health.down_targets(), key=lambda t: t.key):
        down.add_metric([target.key, kind_of(target.last_error), target.last_error[:300]], 1)
    yield down


class _Metrics(Resource):
    """A scrape: the oldest message's age is found first, a slice of a big queue per turn
    of the reactor (at once, a million ids stalled acceptance ~100 ms per scrape), then
    every value is read in one turn."""

    def __init__(self, registry: CollectorRegistry, collector: Any, clock: Any) -> None:
        super().__init__()
        self.registry, self.collector, self.clock = registry, collector, clock

    def getChild(self, path: bytes, request: Request) -> IResource:
        return pages.notFound()

    def render_GET(self, request: Request) -> Any:
        scheduler = self.collector.root.scheduler
        found = in_turns(self.clock, scheduler.oldest_age_steps())
        request.notifyFinish().addErrback(lambda _: found.cancel())  # the scraper went away
        found.addCallback(self._write, request)
        found.addErrback(self._failed, request)
        return NOT_DONE_YET

    def _failed(self, failure: Failure, request: Request) -> None:
        if failure.check(defer.CancelledError):
            return  # nobody to answer
        log.failure("metrics: the scrape failed", failure)
        request.setResponseCode(500)
        request.finish()

    def _write(self, oldest_age: float, request: Request) -> None:
        self.collector.oldest_age = oldest_age
        body = generate_latest(self.registry)
        request.setHeader(b"content-type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"content-length", b"%d" % len(body))
        request.write(body)
        request.finish()


class _Index(Resource):
    """``/``: a pointer to ``/metrics``; anything else is 404."""

    def __init__(self, metrics: _Metrics) -> None:
        super().__init__()
        self.putChild(b"metrics", metrics)

    def getChild(self, path: bytes, request: Request) -> IResource:
        if path == b"" and not request.postpath:
            return self
        return pages.notFound()

    def render_GET(self, request: Request) -> bytes:
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return b"mxbackup: Prometheus metrics at /metrics\n"


class _Request(Request):
    """Says ``Server: mxbackup``: Twisted's default names its exact version, which helps
    nobody but someone matching it against a list of vulnerabilities."""

    def setHeader(self, name: Any, value: Any) -> None:  # noqa: N802
        key = name.decode("latin-1") if isinstance(name, bytes) else str(name)
        if key.lower() == "server":
            value = b"mxbackup"
        super().setHeader(name, value)


class _QuietSite(Site):
    """No access-log line per request: a scrape every few seconds would drown the log."""

    requestFactory = _Request

    def log(self, request: Request) -> None:
        pass
