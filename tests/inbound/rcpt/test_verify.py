"""Link: recipient verification, with a scripted callout, the SQLite store on a Clock and a
scripted target view (the rules one by one; real sockets are in test_verify_wire.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from rcpt_case import transaction
from twisted.internet import defer
from twisted.internet.task import Clock

from helpers import base_config
from mxbackup import config as config_module
from mxbackup import replies
from mxbackup.inbound.address import parse_path
from mxbackup.inbound.rcpt.decision import ACCEPT, Candidate
from mxbackup.inbound.rcpt.verify import STORE_LOG_INTERVAL, Verification
from mxbackup.routes import RouteTable
from mxbackup.state import StoreUnavailable, open_store
from mxbackup.state.verifycache import VerifyCache
from mxbackup.stats import Stats
from mxbackup.wire.callout import CalloutAnswer

DAY = 86400.0


class View:
    def __init__(self) -> None:
        self.up: bool | None = None
        self.queued = 0

    def is_up(self, route):
        return self.up

    def is_down(self, route):
        return self.up is False

    def queued_messages(self, route):
        return self.queued


class ScriptedCallout:
    """Answers by address; ``hold`` keeps the Deferreds for the test to fire."""

    def __init__(self) -> None:
        self.answers: dict[str, CalloutAnswer] = {}
        self.asked: list[str] = []
        self.hold = False
        self.pending: list[tuple[str, defer.Deferred]] = []

    def __call__(self, route, address):
        self.asked.append(address)
        d: defer.Deferred = defer.Deferred()
        if self.hold:
            self.pending.append((address, d))
        else:
            d.callback(self.answer(address))
        return d

    def answer(self, address):
        return self.answers.get(address, CalloutAnswer("accepted", 250, "2.1.5 ok", "[x]:25"))

    def release(self):
        while self.pending:
            address, d = self.pending.pop(0)
            d.callback(self.answer(address))


class BrokenStore:
    def get(self, namespace, key):
        return defer.fail(StoreUnavailable("redis down"))

    def put(self, namespace, key, value, ttl):
        return defer.fail(StoreUnavailable("redis down"))


def make_routes(tmp: Path, **verify):
    data = base_config(tmp)
    data["routes"] = [
        {"domain": "example.com", "target_host": "127.0.0.1", "verify_recipients": verify},
        {"domain": "plain.test", "target_host": "127.0.0.1"},
        {
            "domain": "listed.test",
            "target_host": "127.0.0.1",
            "addresses": ["a@listed.test"],
            "verify_recipients": {},
        },
    ]
    return RouteTable(config_module.parse(data, "test.yaml").routes)


class World:
    def __init__(self, tmp: Path, store=None, **verify) -> None:
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.routes = make_routes(tmp, **verify)
        self.store = store or open_store(f"sqlite:{tmp}/state.sqlite", self.clock)
        self.callout = ScriptedCallout()
        self.view = View()
        self.stats = Stats()
        self.link = Verification(
            VerifyCache(self.store), self.callout, self.view, self.clock, self.stats
        )

    def decide(self, address: str):
        mailbox = parse_path(f"<{address}>", allow_null=False)
        result = self.link.decide(
            transaction(), Candidate(mailbox, self.routes.lookup(mailbox.domain))
        )
        if not isinstance(result, defer.Deferred):
            return result
        got: list = []
        result.addCallback(lambda r: got.append(r) or r)
        return got[0] if got else result

    def refuse(self, address: str, code: int = 550, text: str = "5.1.1 <x>: user unknown"):
        self.callout.answers[address] = CalloutAnswer("refused", code, text, "[x]:25")


@pytest.fixture
def w(tmp_path):
    return World(tmp_path)


def test_accepted_by_the_target_then_from_the_cache(w):
    assert w.decide("bob@example.com") is ACCEPT
    assert w.decide("bob@example.com") is ACCEPT
    assert w.decide("BOB@Example.com") is ACCEPT  # one entry for every spelling
    assert w.callout.asked == ["bob@example.com"]
    assert w.stats.callouts["accepted"] == 1
    assert w.stats.verify_cache == {"miss": 1, "hit": 2}


def test_refused_by_the_target_with_its_text_then_from_the_cache(w):
    w.refuse("nobody@example.com", text="5.1.1 <nobody@example.com>: Recipient \x1b unknown")
    first = w.decide("nobody@example.com")
    assert (first.code, first.status) == (550, "5.1.1")
    assert first.text.endswith("<nobody@example.com>: Recipient ? unknown")
    assert w.decide("nobody@example.com") == first
    assert w.callout.asked == ["nobody@example.com"]
    assert w.stats.refusals["verify_refused"] == 2


def test_entries_expire_after_their_ttl(tmp_path):
    w = World(tmp_path, positive_ttl=DAY, negative_ttl=3600)
    w.refuse("nobody@example.com")
    w.decide("bob@example.com")
    w.decide("nobody@example.com")
    w.clock.advance(3601)
    w.decide("bob@example.com")
    w.decide("nobody@example.com")
    assert w.callout.asked == ["bob@example.com", "nobody@example.com", "nobody@example.com"]
    w.clock.advance(DAY)
    w.decide("bob@example.com")
    assert w.callout.asked.count("bob@example.com") == 2


def test_concurrent_rcpts_share_one_callout(w):
    w.callout.hold = True
    waiting = [w.decide("bob@example.com") for _ in range(5)]
    assert all(isinstance(d, defer.Deferred) for d in waiting)
    assert w.callout.asked == ["bob@example.com"]
    w.callout.release()
    assert [d.result for d in waiting] == [ACCEPT] * 5
    assert w.stats.callouts["shared"] == 4


@pytest.mark.parametrize("kind,code", [("unreachable", 451), ("unreachable", 0)])
def test_unreachable_accept(w, kind, code):
    w.callout.answers["bob@example.com"] = CalloutAnswer(kind, code, "try later")
    assert w.decide("bob@example.com") is ACCEPT
    # not remembered: asked again next time
    w.decide("bob@example.com")
    assert w.callout.asked == ["bob@example.com"] * 2


def test_unreachable_accept_known(tmp_path):
    w = World(tmp_path, when_unreachable="accept_known")
    assert w.decide("known@example.com") is ACCEPT  # learnt while the target answered
    w.callout.answers["new@example.com"] = CalloutAnswer("unreachable", 0, "timed out")
    w.callout.answers["known@example.com"] = CalloutAnswer("unreachable", 0, "timed out")
    reply = w.decide("new@example.com")
    assert (reply.code, reply.status) == (450, "4.4.3")
    assert w.decide("known@example.com") is ACCEPT
    assert w.stats.refusals["verify_unknown"] == 1


def test_target_known_down_no_callout(tmp_path):
    w = World(tmp_path, when_unreachable="accept_known")
    w.refuse("nobody@example.com")
    w.decide("known@example.com")
    w.decide("nobody@example.com")
    w.view.up = False
    asked = list(w.callout.asked)
    assert w.decide("known@example.com") is ACCEPT
    assert w.decide("nobody@example.com").code == 550  # negative entries refuse while down
    assert w.decide("new@example.com").code == 450
    assert w.callout.asked == asked
    assert w.stats.callouts["skipped_target_down"] == 1


def test_target_known_down_accept(w):
    w.view.up = False
    assert w.decide("new@example.com") is ACCEPT
    assert w.callout.asked == []


def test_callout_off_uses_the_cache_only(tmp_path):
    w = World(tmp_path, callout=False, when_unreachable="accept_known")
    assert w.decide("new@example.com").code == 450
    w.link.cache.remember("example.com", "known@example.com", True, "", DAY)
    assert w.decide("known@example.com") is ACCEPT
    assert w.callout.asked == []


def test_routes_without_verification_or_with_a_list_are_not_asked(w):
    assert w.decide("x@plain.test") is ACCEPT
    assert w.decide("a@listed.test") is ACCEPT
    assert w.decide("x@elsewhere.test") is ACCEPT
    assert w.callout.asked == []


def test_store_unavailable_never_refuses_what_the_target_accepts(tmp_path, caplog):
    w = World(tmp_path, store=BrokenStore())
    w.refuse("nobody@example.com")
    assert w.decide("bob@example.com") is ACCEPT  # the callout decides
    assert w.decide("nobody@example.com").code == 550  # the primary's word, not ours
    w.view.up = False
    assert w.decide("new@example.com") is ACCEPT  # when_unreachable: accept
    assert w.stats.store_errors >= 3


def test_store_unavailable_with_accept_known_is_temporary(tmp_path):
    w = World(tmp_path, store=BrokenStore(), when_unreachable="accept_known")
    w.view.up = False
    reply = w.decide("new@example.com")
    assert reply.code == 450  # never a 5xx


def test_store_failures_are_logged_once_a_minute(tmp_path):
    from twisted.logger import globalLogPublisher

    seen: list = []
    globalLogPublisher.addObserver(seen.append)
    try:
        w = World(tmp_path, store=BrokenStore())
        for _ in range(5):
            w.decide("bob@example.com")
        w.clock.advance(STORE_LOG_INTERVAL)
        w.decide("bob@example.com")
    finally:
        globalLogPublisher.removeObserver(seen.append)
    warned = [e for e in seen if "state store unavailable" in e.get("log_format", "")]
    assert len(warned) == 2


def test_one_log_line_per_decision(w):
    from twisted.logger import globalLogPublisher

    seen: list = []
    globalLogPublisher.addObserver(seen.append)
    try:
        w.decide("bob@example.com")
        w.decide("bob@example.com")
    finally:
        globalLogPublisher.removeObserver(seen.append)
    lines = [e for e in seen if e.get("log_namespace") == "mxbackup.verify"]
    assert [e["result"] for e in lines] == ["accepted", "accepted"]
    assert lines[0]["why"].startswith("callout") and lines[1]["why"] == "cached positive"


def test_reply_text_is_a_textstring():
    assert replies.VERIFY_REFUSED.format("a\r\nb").text.endswith("a??b")
