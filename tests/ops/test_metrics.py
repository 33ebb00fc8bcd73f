"""The metrics endpoint, scraped over a real socket and read with Prometheus's own parser."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer, protocol, reactor
from twisted.internet.error import ConnectionDone
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.server import NOT_DONE_YET
from twisted.web.test.requesthelper import DummyRequest

from helpers import listening_port, track_connections
from mxbackup.config import MetricsConfig
from mxbackup.ops.metrics import make_metrics_service
from mxbackup.outbound.health import Health
from mxbackup.stats import Stats


class FakeScheduler:
    def __init__(self) -> None:
        self.queue: dict[str, object] = {"q1": object(), "q2": object(), "q3": object()}
        self.health = Health()
        self.targets = self.health.targets
        for key in ("example.com", "example.org", "idle.example"):
            self.health.get(key)
        why = "[192.0.2.1]:25: starttls: TLS certificate verification failed: expired"
        self.health.failed(self.targets["example.org"], why, 100.0, 30.0)
        self.health.failed(self.targets["example.org"], why, 130.0, 30.0)
        self.depths = {"example.com": 1, "example.org": 2, "mx:example.net": 1}
        self.age = 754.5
        self.prefetcher = SimpleNamespace(failures=1)
        self.loading: dict[str, object] | None = {"loaded": 3, "of": 10, "failed": None}

    def load_progress(self) -> dict[str, object] | None:
        return self.loading

    def depth_by_target(self) -> dict[str, int]:
        return dict(self.depths)

    def oldest_age_steps(self) -> Any:
        yield  # a turn of the reactor, as a big queue's scan takes
        return self.age


class _Body(protocol.Protocol):
    def __init__(self, done: defer.Deferred[bytes]) -> None:
        self.done = done
        self.parts: list[bytes] = []

    def dataReceived(self, data: bytes) -> None:
        self.parts.append(data)

    def connectionLost(self, reason: Any) -> None:
        if reason.check(ResponseDone):
            self.done.callback(b"".join(self.parts))
        else:
            self.done.errback(reason)


def read_body(response: Any) -> defer.Deferred[bytes]:
    """Like ``readBody``, without its warning about ``abortConnection``."""
    done: defer.Deferred[bytes] = defer.Deferred()
    response.deliverBody(_Body(done))
    return done


class MetricsTests(TestCase):
    timeout = 30

    @defer.inlineCallbacks
    def setUp(self) -> Any:
        self.stats = Stats(accepted=7, delivered=5, deferred=3, bounced=2, dsn_sent=2)
        self.stats.refused["550"] += 4
        self.stats.refused["451"] += 1
        self.stats.callouts.update(accepted=3, refused=1)
        self.stats.verify_cache.update(hit=10, miss=4)
        self.stats.store_errors = 1
        self.stats.refusals["route_quota"] += 2
        self.stats.refusals["dnsbl"] += 1
        self.stats.check_results[("spf", "fail")] += 3
        self.scheduler = FakeScheduler()
        self.root = SimpleNamespace(
            stats=self.stats,
            scheduler=self.scheduler,
            smtp_factory=SimpleNamespace(connections=2),
        )
        svc = make_metrics_service(
            MetricsConfig(listen="tcp:0:interface=127.0.0.1"), self.root, reactor
        )
        lost = track_connections(svc.factory)
        listening = listening_port(svc)
        svc.startService()
        port = yield listening
        self.base = f"http://127.0.0.1:{port.getHost().port}"
        pool = HTTPConnectionPool(reactor, persistent=False)
        self.agent = Agent(reactor, pool=pool)

        @defer.inlineCallbacks
        def stop() -> Any:
            yield pool.closeCachedConnections()
            yield defer.gatherResults(lost)
            yield svc.stopService()

        self.addCleanup(stop)

    @defer.inlineCallbacks
    def get(self, path: str) -> Any:
        response = yield self.agent.request(b"GET", (self.base + path).encode("ascii"))
        body = yield read_body(response)
        return response, body

    @defer.inlineCallbacks
    def scrape(self) -> Any:
        response, body = yield self.get("/metrics")
        self.assertEqual(response.code, 200)
        content_type = response.headers.getRawHeaders(b"content-type")[0]
        self.assertTrue(content_type.startswith(b"text/plain"), content_type)
        samples = {}
        for family in text_string_to_metric_families(body.decode("utf-8")):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return samples

    @defer.inlineCallbacks
    def test_values(self) -> Any:
        samples = yield self.scrape()
        expected = {
            ("mxbackup_messages_accepted_total", ()): 7,
            ("mxbackup_recipients_refused_total", (("code", "550"),)): 4,
            ("mxbackup_recipients_refused_total", (("code", "451"),)): 1,
            ("mxbackup_deliveries_total", (("outcome", "delivered"),)): 5,
            ("mxbackup_deliveries_total", (("outcome", "deferred"),)): 3,
            ("mxbackup_deliveries_total", (("outcome", "bounced"),)): 2,
            ("mxbackup_dsn_sent_total", ()): 2,
            ("mxbackup_queue_messages", ()): 3,
            ("mxbackup_queue_loading_messages", ()): 7,
            ("mxbackup_queue_depth", (("target", "example.com"),)): 1,
            ("mxbackup_queue_depth", (("target", "example.org"),)): 2,
            ("mxbackup_queue_depth", (("target", "mx:example.net"),)): 1,
            ("mxbackup_queue_depth", (("target", "idle.example"),)): 0,
            ("mxbackup_target_up", (("target", "example.com"),)): 1,
            ("mxbackup_target_up", (("target", "example.org"),)): 0,
            ("mxbackup_target_up", (("target", "mx:example.net"),)): 1,
            ("mxbackup_target_up", (("target", "idle.example"),)): 1,
            (
                "mxbackup_target_failures_total",
                (("reason", "tls_certificate"), ("target", "example.org")),
            ): 2,
            (
                "mxbackup_target_down_reason",
                (
                    (
                        "error",
                        "[192.0.2.1]:25: starttls: TLS certificate verification failed: expired",
                    ),
                    ("reason", "tls_certificate"),
                    ("target", "example.org"),
                ),
            ): 1,
            ("mxbackup_oldest_message_age_seconds", ()): 754.5,
            ("mxbackup_smtp_connections", ()): 2,
            ("mxbackup_prefetch_failures_total", ()): 1,
            ("mxbackup_verify_callouts_total", (("outcome", "accepted"),)): 3,
            ("mxbackup_verify_callouts_total", (("outcome", "refused"),)): 1,
            ("mxbackup_verify_cache_total", (("result", "hit"),)): 10,
            ("mxbackup_verify_cache_total", (("result", "miss"),)): 4,
            ("mxbackup_state_store_errors_total", ()): 1,
            ("mxbackup_rcpt_refusals_total", (("reason", "route_quota"),)): 2,
            ("mxbackup_rcpt_refusals_total", (("reason", "dnsbl"),)): 1,
            ("mxbackup_check_results_total", (("check", "spf"), ("result", "fail"))): 3,
            ("mxbackup_route_queued_messages", (("route", "example.com"),)): 1,
            ("mxbackup_route_queued_messages", (("route", "example.org"),)): 2,
        }
        self.assertEqual(samples, expected)

    @defer.inlineCallbacks
    def test_each_scrape_reads_live_values(self) -> Any:
        yield self.scrape()
        self.stats.accepted += 1
        self.stats.refused["554"] += 1
        self.scheduler.queue.clear()
        self.scheduler.loading = None  # the load is complete
        self.scheduler.depths.clear()
        self.scheduler.targets["example.org"].down_since = 0.0
        self.scheduler.age = 0.0
        self.root.smtp_factory.connections = 0
        samples = yield self.scrape()
        self.assertEqual(samples[("mxbackup_messages_accepted_total", ())], 8)
        self.assertEqual(samples[("mxbackup_recipients_refused_total", (("code", "554"),))], 1)
        self.assertEqual(samples[("mxbackup_queue_messages", ())], 0)
        self.assertEqual(samples[("mxbackup_queue_loading_messages", ())], 0)
        self.assertEqual(samples[("mxbackup_queue_depth", (("target", "example.org"),))], 0)
        self.assertNotIn(("mxbackup_queue_depth", (("target", "mx:example.net"),)), samples)
        self.assertEqual(samples[("mxbackup_target_up", (("target", "example.org"),))], 1)
        self.assertEqual(samples[("mxbackup_oldest_message_age_seconds", ())], 0)
        self.assertEqual(samples[("mxbackup_smtp_connections", ())], 0)

    @defer.inlineCallbacks
    def test_index_and_not_found(self) -> Any:
        response, body = yield self.get("/")
        self.assertEqual(response.code, 200)
        self.assertIn(b"/metrics", body)
        for path in ("/nope", "/metrics/extra", "/metrics.txt"):
            response, _ = yield self.get(path)
            self.assertEqual(response.code, 404, path)
            self.assertEqual(response.headers.getRawHeaders(b"server"), [b"mxbackup"])


def _scrape_resource(scheduler: Any) -> Any:
    from twisted.internet.task import Clock

    from mxbackup.ops.metrics import MXBackupCollector, _Metrics

    root = SimpleNamespace(
        stats=Stats(), scheduler=scheduler, smtp_factory=SimpleNamespace(connections=0)
    )
    registry = CollectorRegistry(auto_describe=False)
    collector = MXBackupCollector(root)
    registry.register(collector)
    clock = Clock()
    return _Metrics(registry, collector, clock), clock


def test_a_scrape_finds_the_oldest_in_turns_then_answers() -> None:
    resource, clock = _scrape_resource(FakeScheduler())
    request = DummyRequest([b""])
    assert resource.render_GET(request) == NOT_DONE_YET
    assert request.finished == 0  # the scan is under way
    clock.advance(0)
    assert request.finished == 1
    assert b"mxbackup_oldest_message_age_seconds 754.5" in b"".join(request.written)


def test_a_scraper_that_goes_away_stops_the_scan() -> None:
    scheduler = FakeScheduler()
    resource, clock = _scrape_resource(scheduler)
    request = DummyRequest([b""])
    resource.render_GET(request)
    request.processingFailed(Failure(ConnectionDone()))
    scheduler.age = -1.0  # a slice after the cancel would answer with this
    clock.advance(0)
    assert request.finished == 0 and request.written == []


def test_a_scan_that_fails_is_a_500_and_a_log_line() -> None:
    scheduler = FakeScheduler()

    def broken() -> Any:
        yield
        raise RuntimeError("a bug")

    scheduler.oldest_age_steps = broken  # type: ignore[method-assign]
    resource, clock = _scrape_resource(scheduler)
    request = DummyRequest([b""])
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        resource.render_GET(request)
        clock.advance(0)
    finally:
        globalLogPublisher.removeObserver(events.append)
    assert request.responseCode == 500 and request.finished == 1
    assert any(e.get("log_format") == "metrics: the scrape failed" for e in events)
