"""Recipient verification, the target-up rule and the route quota, end to end: the real
``twistd -n mxbackup`` against a scripted primary in a process of its own
(``primaryprocess``: it accepts some addresses, refuses others, counts the callouts it sees
and can be killed and started again on its port), a real ``redis-server`` shared by two
nodes, and the operators' ``mxbackup`` commands.

Every wait polls for an outcome of another process (a log line, a delivery, a reply) with a
deadline; nothing sleeps for time to pass.  Each test is one scenario on its own servers.
"""

from __future__ import annotations

import json
import re
import smtplib
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from primaryprocess import PrimaryProcess
from prometheus_client.parser import text_string_to_metric_families
from redisserver import REDIS_SERVER, RedisServer

from helpers import ROOT, Twistd, base_config, write_config

UNKNOWN = "550 5.1.1 <{a}>: Recipient address rejected: User unknown in virtual mailbox table"
_STARTING = re.compile(rb"_QuietSite starting on (\d+)")


def refusing(*addresses: str) -> dict[str, str]:
    return {a: UNKNOWN.format(a=a) for a in addresses}


def wait_for(predicate: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Poll for an outcome produced by other processes (not a sleep for time to pass)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(0.05)


class Node:
    """One mxbackup: the real twistd on its own configuration."""

    def __init__(
        self, tmp: Path, routes: list[dict], probe_interval: float = 0.5, **server: Any
    ) -> None:
        tmp.mkdir(parents=True, exist_ok=True)
        data = base_config(tmp, **server)
        data["routes"] = routes
        data["delivery"] = {
            "tick": 0.1,
            "probe_interval": probe_interval,
            "quick_check_interval": 0.2,
            "dns_servers": ["127.0.0.1:9"],  # DSNs to sender.test: never the system resolver
        }
        data["metrics"] = {"listen": "tcp:0:interface=127.0.0.1"}
        self.tmp = tmp
        self.config = write_config(tmp, data)
        self.twistd = Twistd(self.config, tmp / "twistd.log")
        self.start()

    def start(self) -> None:
        offset = self.twistd.log_path.stat().st_size if self.twistd.log_path.exists() else 0
        self.twistd.start()  # returns once the SMTP port listens; metrics may follow

        def metrics_port() -> list[bytes]:
            return _STARTING.findall(self.twistd.log_path.read_bytes()[offset:])

        found = wait_for(metrics_port)
        assert found, self.log()
        self.metrics_port = int(found[-1])

    def stop(self) -> None:
        self.twistd.stop()

    def log(self) -> str:
        return self.twistd.logtext()

    def rcpt(self, *addresses: str, data: bytes | None = None) -> list[tuple[int, str]]:
        """One session: MAIL, a RCPT for each address, DATA when given and some were taken;
        the RCPT replies (and DATA's last)."""
        with smtplib.SMTP("127.0.0.1", self.twistd.port, timeout=20) as c:
            c.ehlo("client.test")
            c.mail("s@sender.test")
            out = [(code, text.decode()) for code, text in (c.rcpt(a) for a in addresses)]
            if data is not None and any(code == 250 for code, _ in out):
                code, text = c.data(data)
                out.append((code, text.decode()))
        return out

    def codes(self, *addresses: str, data: bytes | None = None) -> list[int]:
        return [code for code, _ in self.rcpt(*addresses, data=data)]

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "mxbackup.ops.cli", *args, "--config", str(self.config)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=ROOT,
        )

    def entries(self) -> dict[str, dict]:
        """``mxbackup verify list --json``, by address."""
        out = self.cli("verify", "list", "--json")
        assert out.returncode == 0, out.stderr
        return {e["address"]: e for e in json.loads(out.stdout)}

    def metrics(self) -> dict[str, dict[str, float]]:
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as r:
            text = r.read().decode()
        out: dict[str, dict[str, float]] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                label = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
                out.setdefault(s.name, {})[label] = s.value
        return out


@pytest.fixture
def cleanup():
    stack: list[Callable[[], None]] = []
    yield stack.append
    for fn in reversed(stack):
        fn()


def route(domain: str, port: int, **keys: Any) -> dict:
    return {"domain": domain, "target_host": "127.0.0.1", "port": port, **keys}


MESSAGE = b"Subject: verify e2e\r\n\r\nhello\r\n"


def test_callouts_cache_outage_restart_and_learning(tmp_path, cleanup):
    """(a) callouts, each address asked once; (b) the primary down; (c) a restart keeps the
    SQLite cache; (f) delivery teaches the cache, ``verify list|forget``."""
    primary = PrimaryProcess(
        tmp_path / "primary.log",
        refusing("nobody@example.com", "late@example.com", "nobody@short.test"),
    ).start()
    cleanup(primary.kill)
    short = {"timeout": 3, "positive_ttl": 1, "negative_ttl": 1}
    routes = [
        route("example.com", primary.port, verify_recipients={"timeout": 3}),
        route("short.test", primary.port, verify_recipients=short),
        route(
            "known.test",
            primary.port,
            verify_recipients={"timeout": 3, "when_unreachable": "accept_known"},
        ),
    ]
    node = Node(tmp_path / "mx", routes)  # server.state_store left out: <spool>/state.sqlite
    cleanup(node.stop)

    # (a) a known address is accepted and the message delivered; an unknown one gets 550
    # 5.1.1 with the primary's text
    replies = node.rcpt("bob@example.com", "nobody@example.com", data=MESSAGE)
    assert replies[0][0] == 250
    code, text = replies[1]
    assert code == 550 and text.startswith("5.1.1 "), replies
    assert "Recipient address rejected: User unknown in virtual mailbox table" in text
    assert replies[2][0] == 250  # DATA
    assert primary.wait_delivered("bob@example.com")
    # asked again on another connection: refused from the cache, no new callout
    assert node.codes("nobody@example.com", "bob@example.com") == [550, 250]
    assert primary.callouts("nobody@example.com") == 1
    assert primary.callouts("bob@example.com") == 1
    assert node.codes("alice@known.test") == [250]
    out = node.cli("reload")  # a reload keeps the cache (and what is in flight)
    assert out.returncode == 0, out.stderr
    assert node.codes("nobody@example.com", "bob@example.com") == [550, 250]
    assert primary.callouts("nobody@example.com") == primary.callouts("bob@example.com") == 1
    # the TTLs: asked again once the entry has expired (1 s here), not before
    started = time.monotonic()
    assert node.codes("nobody@short.test", "ok@short.test") == [550, 250]
    assert node.codes("nobody@short.test", "ok@short.test") == [550, 250]
    if time.monotonic() - started < 0.9:
        assert primary.callouts("nobody@short.test") == primary.callouts("ok@short.test") == 1

    def asked_again() -> bool:
        assert node.codes("nobody@short.test", "ok@short.test") == [550, 250]
        return primary.callouts("nobody@short.test") == primary.callouts("ok@short.test") == 2

    assert wait_for(asked_again, 5)
    assert time.monotonic() - started >= 1.0
    assert (tmp_path / "mx" / "spool" / "state.sqlite").exists()

    # (b) the primary goes down: the cache answers; new addresses per when_unreachable
    primary.kill()
    replies = node.rcpt(
        "nobody@example.com",
        "bob@example.com",
        "late@example.com",
        "carol@example.com",
        "new@known.test",
        "alice@known.test",
        data=MESSAGE,
    )
    assert [c for c, _ in replies] == [550, 250, 250, 250, 450, 250, 250], replies
    assert replies[4][1].startswith("4.4.3 "), replies
    assert primary.callouts("nobody@example.com") == 1  # still: nothing was asked
    # the delivery of that message fails: the scheduler knows the target down, and no
    # callout is even tried for the next new address (accepted: when_unreachable accept)
    assert wait_for(lambda: "target example.com is down" in node.log())
    assert node.codes("dave@example.com") == [250]
    m = node.metrics()
    assert m["mxbackup_verify_callouts_total"].get("outcome=skipped_target_down", 0) >= 1
    assert m["mxbackup_verify_callouts_total"]["outcome=refused"] >= 1
    assert m["mxbackup_verify_cache_total"]["result=hit"] >= 4

    # (c) a restart (primary still down): both kinds of entries survive
    node.stop()
    node.start()
    assert node.codes("nobody@example.com", "alice@known.test", "new@known.test") == [550, 250, 450]
    # the primary returns (same port): the queued message goes out; the primary refuses
    # late@ at RCPT, which teaches a negative entry (f)
    primary.start()
    assert primary.wait_delivered("bob@example.com") and primary.wait_delivered("carol@example.com")
    assert wait_for(lambda: "late@example.com" in node.entries())
    entries = node.entries()
    assert entries["late@example.com"]["result"] == "negative"
    assert "User unknown" in entries["late@example.com"]["text"]
    assert entries["carol@example.com"]["result"] == "positive"  # learnt from delivery
    assert entries["bob@example.com"]["route"] == "example.com"
    assert primary.callouts("late@example.com") == 0
    assert primary.callouts("carol@example.com") == 0
    # known after the restart: no callout for them now that the primary is up
    assert node.codes("bob@example.com", "carol@example.com", "late@example.com") == [
        250,
        250,
        550,
    ]
    assert primary.callouts("bob@example.com") == 1
    assert primary.callouts("carol@example.com") == 0
    assert primary.callouts("late@example.com") == 0

    # (f) forget: the address is asked again
    out = node.cli("verify", "forget", "bob@example.com")
    assert out.returncode == 0 and "forgot 1 entry" in out.stdout, out
    assert "bob@example.com" not in node.entries()
    assert node.codes("bob@example.com") == [250]
    assert primary.callouts("bob@example.com") == 2
    out = node.cli("verify", "forget", "nobody-at-all@example.com")
    assert out.returncode == 1
    out = node.cli("verify", "list", "--route", "known.test")
    assert out.returncode == 0 and "<alice@known.test>" in out.stdout, out
    assert "bob@" not in out.stdout and "-- 1 entry" in out.stdout, out.stdout
    # a callout never left a message: every DATA the primary saw was a delivery
    assert primary.data_commands() == primary.messages() == 3


@pytest.mark.skipif(REDIS_SERVER is None, reason="redis-server is not installed")
def test_two_nodes_share_redis_and_redis_down_fails_open(tmp_path, cleanup):
    """(d) what node 1 learnt node 2 uses without a callout; (e) redis down."""
    primary = PrimaryProcess(tmp_path / "primary.log", refusing("nobody@example.com")).start()
    cleanup(primary.kill)
    redis = RedisServer().start()
    cleanup(redis.stop)
    routes = [
        route("example.com", primary.port, verify_recipients={"timeout": 3}),
        route(
            "known.test",
            primary.port,
            verify_recipients={"timeout": 3, "when_unreachable": "accept_known"},
        ),
    ]
    one = Node(tmp_path / "one", routes, state_store=redis.url)
    cleanup(one.stop)
    two = Node(tmp_path / "two", routes, state_store=redis.url)
    cleanup(two.stop)

    assert one.codes("bob@example.com", "nobody@example.com", "alice@known.test") == [
        250,
        550,
        250,
    ]
    replies = two.rcpt("bob@example.com", "nobody@example.com", "alice@known.test")
    assert [c for c, _ in replies] == [250, 550, 250]
    assert "User unknown" in replies[1][1]  # the primary's text, via node 1
    assert primary.callouts() == 3  # node 2 asked nothing
    assert set(two.entries()) == {"bob@example.com", "nobody@example.com", "alice@known.test"}

    # (e) redis goes down: never a 5xx for mail that would be accepted
    redis.stop()
    replies = two.rcpt("eve@example.com", "nobody@example.com", data=MESSAGE)
    assert [c for c, _ in replies] == [250, 550, 250]  # the primary's own word, asked again
    assert primary.wait_delivered("eve@example.com")
    primary.kill()
    replies = two.rcpt(
        "frank@example.com", "bob@example.com", "alice@known.test", "gina@known.test"
    )
    # primary and store down: accept accepts; accept_known cannot know anybody: 450, never 5xx
    assert [c for c, _ in replies] == [250, 250, 450, 450], replies
    for _ in range(3):
        assert two.codes("harry@example.com", "ida@known.test") == [250, 450]
    assert wait_for(lambda: two.metrics()["mxbackup_state_store_errors_total"][""] >= 5)
    assert two.log().count("state store unavailable") == 1, two.log()
    out = two.cli("verify", "list")
    assert out.returncode == 1  # the operator is told, not shown an empty cache
    # redis back: node 2 uses it again
    redis.start(redis.port)
    primary.start()
    assert wait_for(lambda: two.codes("nobody@example.com") == [550])


def test_target_up_route_quota_and_a_silent_target(tmp_path, cleanup):
    """(g) accept_when_target_up: false; (h) max_queued_messages; a target that takes the
    connection and never says a word costs the client at most the callout's timeout."""
    primary = PrimaryProcess(tmp_path / "primary.log", {}).start()
    cleanup(primary.kill)
    dead = PrimaryProcess(tmp_path / "dead.log", {}).start()  # a free port, then nobody there
    dead.kill()
    silent = socket.socket()  # the kernel completes the handshake; nobody ever answers
    silent.bind(("127.0.0.1", 0))
    silent.listen(16)
    cleanup(silent.close)
    routes = [
        route("up.test", primary.port, accept_when_target_up=False),
        route("quota.test", dead.port, max_queued_messages=2),
        route("other.test", dead.port, max_queued_messages=2),
        route("slow.test", silent.getsockname()[1], verify_recipients={"timeout": 1}),
        route(
            "slowknown.test",
            silent.getsockname()[1],
            verify_recipients={"timeout": 1, "when_unreachable": "accept_known"},
        ),
    ]
    (tmp_path / "not-a-directory").write_text("")
    broken = f"sqlite:{tmp_path / 'not-a-directory' / 'state.sqlite'}"
    # probe_interval one hour: the killed primary must be noticed through the refused RCPTs
    # (checked at most every quick_check_interval, 0.2 s here), not the periodic probe
    node = Node(tmp_path / "mx", routes, probe_interval=3600, state_store=broken)
    cleanup(node.stop)

    started = time.monotonic()
    assert node.codes("a@slow.test", "b@slowknown.test") == [250, 450]
    assert time.monotonic() - started < 2 * 1 + 1.5  # two callouts of at most 1 s each
    assert node.log().count("state store unavailable") == 1

    # (g) unknown target: accepted; once a delivery proved it up: 450 4.7.1
    assert node.codes("u1@up.test", data=MESSAGE) == [250, 250]
    assert primary.wait_delivered("u1@up.test")
    replies = wait_for(lambda: [r for r in node.rcpt("u2@up.test") if r[0] == 450])
    assert replies and replies[0][1].startswith("4.7.1 "), replies
    primary.kill()  # detected down (by the scheduler), mail is accepted again
    killed = time.monotonic()
    assert wait_for(lambda: node.codes("u3@up.test") == [250], 20), node.log()[-3000:]
    assert time.monotonic() - killed < 5

    # (h) two messages queued for quota.test (its target down): the third RCPT gets 452
    for i in range(2):
        assert node.codes(f"q{i}@quota.test", data=MESSAGE) == [250, 250]
    replies = node.rcpt("q2@quota.test", "o1@other.test")
    assert replies[0][0] == 452 and replies[0][1].startswith("4.3.1 "), replies
    assert replies[1][0] == 250
    out = node.cli("queue", "list")
    assert out.returncode == 0, out.stderr
    assert "-- quota.test: 2 message(s) queued" in out.stdout, out.stdout
    m = node.metrics()
    assert m["mxbackup_route_queued_messages"]["route=quota.test"] == 2
    assert m["mxbackup_rcpt_refusals_total"]["reason=route_quota"] == 1
    assert m["mxbackup_rcpt_refusals_total"]["reason=target_up"] >= 1
