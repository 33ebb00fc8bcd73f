"""Recipient verification end to end on real sockets: our SMTP server listening on 127.0.0.1,
a client talking to it, the callouts going to a scripted primary that accepts some addresses
and refuses others; then the primary going down, a restart (the cache survives), and two
servers sharing one real redis-server.  What the primary saw is counted."""

from __future__ import annotations

import tempfile
from pathlib import Path

from fakeprimary import FakePrimary
from redisserver import REDIS_SERVER, RedisServer
from twisted.internet import defer, protocol, reactor
from twisted.trial.unittest import SkipTest, TestCase

from helpers import base_config, sync_thread
from mxbackup import config as config_module
from mxbackup.inbound.factory import SMTPFactory
from mxbackup.inbound.rcpt.services import RcptServices
from mxbackup.inbound.rcpt.verify import Verification
from mxbackup.queue.spool import Spool
from mxbackup.state import open_store
from mxbackup.state.verifycache import VerifyCache
from mxbackup.stats import Stats
from mxbackup.wire.callout import Callouts
from mxbackup.wire.commands import CommandClient
from mxbackup.wire.contract import Candidate

REFUSED = {"nobody@example.com": (550, "5.1.1 <nobody@example.com>: Recipient address rejected")}


class View:
    def __init__(self) -> None:
        self.up: bool | None = None

    def is_up(self, route):
        return self.up

    def is_down(self, route):
        return self.up is False

    def queued_messages(self, route):
        return 0


class Node:
    """One mxbackup SMTP side: its own spool and listener, a store, callouts to the primary."""

    def __init__(self, test: TestCase, primary_port: list[int], store_url: str, **verify):
        self.tmp = Path(tempfile.mkdtemp(prefix="mx-verify-"))
        data = base_config(self.tmp)
        data["routes"] = [
            {
                "domain": "example.com",
                "target_host": "127.0.0.1",
                "verify_recipients": {"timeout": 2, **verify},
            }
        ]
        self.config = config_module.parse(data, "test.yaml")
        self.spool = Spool(self.config.server.spool, sync_thread, clock=reactor.seconds)
        self.spool.recover()
        self.view = View()
        self.stats = Stats()
        self.store_url = store_url
        self.callouts = Callouts(
            reactor,
            lambda route: defer.succeed(
                [Candidate("mx.primary.test", "127.0.0.1", primary_port[0])]
            ),
            "mx2.example.net",
        )
        test.addCleanup(self.callouts.close)
        self.start_store(test)
        self.factory = SMTPFactory(
            self.config,
            self.spool,
            clock=reactor,
            check_password=lambda u, p: defer.succeed(False),
            rcpt=self.services,
        )
        self.port = reactor.listenTCP(0, self.factory, interface="127.0.0.1")
        test.addCleanup(self.port.stopListening)

    def start_store(self, test: TestCase) -> None:
        """(Re)open the store and build the link anew: what a restart does."""
        self.store = open_store(self.store_url, reactor)
        test.addCleanup(self.store.close)
        self.link = Verification(
            VerifyCache(self.store), self.callouts.verify, self.view, reactor, self.stats
        )
        self.services = RcptServices(self.view, self.stats, self.link)
        if hasattr(self, "factory"):
            self.factory.rcpt = self.services
            self.factory.reconfigure(self.config)

    @defer.inlineCallbacks
    def rcpt(self, *addresses: str):
        """One SMTP session: EHLO, MAIL, RCPT for each, QUIT; the RCPT reply codes."""
        client = protocol.ClientCreator(reactor, CommandClient, reactor, 10.0)
        proto = yield client.connectTCP("127.0.0.1", self.port.getHost().port)
        yield proto.expect()
        yield proto.send(b"EHLO client.test")[0]
        yield proto.send(b"MAIL FROM:<s@sender.test>")[0]
        codes = []
        for address in addresses:
            reply = yield proto.send(b"RCPT TO:<" + address.encode() + b">")[0]
            codes.append((reply.code, reply.text))
        yield proto.send(b"QUIT")[0]
        yield proto.lost.when()
        return codes


class VerifyOverTheWire(TestCase):
    timeout = 30

    def setUp(self):
        self.primary = FakePrimary(rcpt_replies=dict(REFUSED)).listen(reactor)
        self.port = [self.primary.portnum]
        self.addCleanup(lambda: self.primary.stop())

    def rcpts_seen(self) -> list[bytes]:
        return [c for c in self.primary.commands() if c.startswith(b"RCPT")]

    def sqlite_node(self, **verify) -> Node:
        path = Path(tempfile.mkdtemp(prefix="mx-state-")) / "state.sqlite"
        return Node(self, self.port, f"sqlite:{path}", **verify)

    @defer.inlineCallbacks
    def test_valid_accepted_invalid_refused_each_asked_once(self):
        node = self.sqlite_node()
        codes = yield node.rcpt("bob@example.com", "nobody@example.com")
        self.assertEqual(codes[0][0], 250)
        self.assertEqual(codes[1][0], 550)
        self.assertTrue(codes[1][1].startswith("5.1.1 Recipient address rejected by the primary"))
        self.assertIn("<nobody@example.com>", codes[1][1])
        again = yield node.rcpt("bob@example.com", "nobody@example.com", "Bob@Example.com")
        self.assertEqual([c for c, _ in again], [250, 550, 250])
        self.assertEqual(len(self.rcpts_seen()), 2)
        self.assertNotIn(b"DATA", self.primary.commands())
        self.assertEqual(self.primary.connections, 1)  # the callout connection was kept

    @defer.inlineCallbacks
    def test_primary_down_then_restart_keeps_the_cache(self):
        node = self.sqlite_node(when_unreachable="accept_known")
        yield node.rcpt("known@example.com", "nobody@example.com")
        yield self.primary.stop()  # the primary goes down (nothing listens there now)
        codes = yield node.rcpt("known@example.com", "nobody@example.com", "new@example.com")
        self.assertEqual([c for c, _ in codes], [250, 550, 450])
        self.assertEqual(node.stats.callouts["unreachable"], 1)
        node.view.up = False  # the scheduler noticed: no callout tried at all
        codes = yield node.rcpt("new2@example.com")
        self.assertEqual(codes[0][0], 450)
        self.assertEqual(node.stats.callouts["unreachable"], 1)
        yield node.store.close()
        node.start_store(self)  # a restart: a new store on the same file
        codes = yield node.rcpt("known@example.com", "nobody@example.com")
        self.assertEqual([c for c, _ in codes], [250, 550])

    @defer.inlineCallbacks
    def test_primary_down_accept_queues_everything_but_known_refusals(self):
        node = self.sqlite_node()
        yield node.rcpt("nobody@example.com")
        yield self.primary.stop()
        codes = yield node.rcpt("new@example.com", "nobody@example.com")
        self.assertEqual([c for c, _ in codes], [250, 550])

    @defer.inlineCallbacks
    def test_two_nodes_share_one_redis(self):
        if REDIS_SERVER is None:
            raise SkipTest("redis-server is not installed")
        redis = RedisServer().start()
        self.addCleanup(redis.stop)
        one = Node(self, self.port, redis.url)
        two = Node(self, self.port, redis.url)
        yield one.rcpt("bob@example.com", "nobody@example.com")
        codes = yield two.rcpt("bob@example.com", "nobody@example.com")
        self.assertEqual([c for c, _ in codes], [250, 550])
        self.assertEqual(len(self.rcpts_seen()), 2)  # node two asked nobody
        self.assertEqual(two.stats.verify_cache["hit"], 2)

    @defer.inlineCallbacks
    def test_redis_down_fails_open(self):
        if REDIS_SERVER is None:
            raise SkipTest("redis-server is not installed")
        redis = RedisServer().start()
        node = Node(self, self.port, redis.url)
        redis.stop()
        codes = yield node.rcpt("bob@example.com", "nobody@example.com")
        self.assertEqual([c for c, _ in codes], [250, 550])  # the primary's word
        yield self.primary.stop()
        codes = yield node.rcpt("new@example.com")
        self.assertEqual(codes[0][0], 250)  # when_unreachable: accept
        self.assertGreater(node.stats.store_errors, 0)
