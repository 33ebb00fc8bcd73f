"""The state store's contract, run against both backends: SQLite (on a ``Clock``) and a real
``redis-server`` on a free loopback port.  Backend-specific behaviour (batching, purge, a file
that cannot be opened, Redis going down and coming back) follows the contract."""

from __future__ import annotations

import os
import socket
import tempfile

from redisserver import REDIS_SERVER, RedisServer
from twisted.internet import defer, reactor
from twisted.internet.task import Clock
from twisted.trial.unittest import SkipTest, TestCase

from mxbackup.state import StoreUnavailable, open_store
from mxbackup.state import sqlite as sqlite_module
from mxbackup.state.redisstore import RETRY_AFTER


class Contract:
    """Mixed into a TestCase with ``make()`` (a fresh, empty store) and ``now()``."""

    store: object

    @defer.inlineCallbacks
    def test_absent_is_none(self):
        self.assertIsNone((yield self.store.get("verify", "nobody")))

    @defer.inlineCallbacks
    def test_put_then_get(self):
        yield self.store.put("verify", "k", b"v\x00\xff", 100)
        self.assertEqual((yield self.store.get("verify", "k")), b"v\x00\xff")

    @defer.inlineCallbacks
    def test_namespaces_are_apart(self):
        yield self.store.put("verify", "k", b"1", 100)
        yield self.store.put("grey", "k", b"2", 100)
        self.assertEqual((yield self.store.get("verify", "k")), b"1")
        self.assertEqual((yield self.store.get("grey", "k")), b"2")

    @defer.inlineCallbacks
    def test_put_replaces(self):
        yield self.store.put("verify", "k", b"1", 100)
        yield self.store.put("verify", "k", b"2", 100)
        self.assertEqual((yield self.store.get("verify", "k")), b"2")

    @defer.inlineCallbacks
    def test_delete(self):
        yield self.store.put("verify", "k", b"1", 100)
        self.assertTrue((yield self.store.delete("verify", "k")))
        self.assertIsNone((yield self.store.get("verify", "k")))
        self.assertFalse((yield self.store.delete("verify", "k")))

    @defer.inlineCallbacks
    def test_zero_ttl_removes(self):
        yield self.store.put("verify", "k", b"1", 100)
        yield self.store.put("verify", "k", b"1", 0)
        self.assertIsNone((yield self.store.get("verify", "k")))

    @defer.inlineCallbacks
    def test_scan_by_prefix(self):
        for key in ("a.com|x", "a.com|y", "b.com|x", "a.co|*z"):
            yield self.store.put("verify", key, key.encode(), 100)
        yield self.store.put("grey", "a.com|w", b"other", 100)
        found = yield self.store.scan("verify", "a.com|")
        self.assertEqual(
            [(k, v) for k, v, _ in found], [("a.com|x", b"a.com|x"), ("a.com|y", b"a.com|y")]
        )
        now = self.now()
        for _, _, expires in found:
            self.assertTrue(now + 95 <= expires <= now + 101, (now, expires))
        everything = yield self.store.scan("verify")
        self.assertEqual(len(everything), 4)
        self.assertEqual(
            [k for k, _, _ in (yield self.store.scan("verify", "a.co|*"))], ["a.co|*z"]
        )

    @defer.inlineCallbacks
    def test_unicode_keys(self):
        yield self.store.put("verify", "example.com|jürgen@exämple.com", b"+", 100)
        self.assertEqual((yield self.store.get("verify", "example.com|jürgen@exämple.com")), b"+")
        found = yield self.store.scan("verify", "example.com|")
        self.assertEqual(found[0][0], "example.com|jürgen@exämple.com")


class SQLiteContract(Contract, TestCase):
    def setUp(self):
        self.clock = Clock()
        self.clock.advance(1_000_000)
        self.dir = tempfile.mkdtemp()
        self.path = os.path.join(self.dir, "state.sqlite")
        self.store = open_store("sqlite:" + self.path, self.clock)
        self.addCleanup(self.store.close)

    def now(self):
        return self.clock.seconds()

    def test_expiry_on_the_clock(self):
        self.store.put("verify", "k", b"1", 10)
        self.clock.advance(9.9)
        self.assertEqual(self.successResultOf(self.store.get("verify", "k")), b"1")
        self.clock.advance(0.2)  # flushed meanwhile: read from the file
        self.assertIsNone(self.successResultOf(self.store.get("verify", "k")))
        self.assertEqual(self.successResultOf(self.store.scan("verify")), [])
        self.assertFalse(self.successResultOf(self.store.delete("verify", "k")))

    def rows(self):
        import sqlite3

        with sqlite3.connect(self.path) as db:
            return db.execute("SELECT ns, key FROM entries ORDER BY key").fetchall()

    def test_writes_are_batched(self):
        for i in range(10):
            self.store.put("verify", f"k{i}", b"1", 100)
        self.assertEqual(self.rows(), [])  # queued, yet readable
        self.assertEqual(self.successResultOf(self.store.get("verify", "k3")), b"1")
        self.clock.advance(sqlite_module.FLUSH_INTERVAL)
        self.assertEqual(len(self.rows()), 10)

    def test_a_full_batch_is_written_at_once(self):
        for i in range(sqlite_module.FLUSH_BATCH):
            self.store.put("verify", f"k{i}", b"1", 100)
        self.assertEqual(len(self.rows()), sqlite_module.FLUSH_BATCH)

    def test_survives_reopen(self):
        self.store.put("verify", "k", b"1", 100)
        self.successResultOf(self.store.close())
        again = open_store("sqlite:" + self.path, self.clock)
        self.addCleanup(again.close)
        self.assertEqual(self.successResultOf(again.get("verify", "k")), b"1")

    def test_purge_removes_expired_rows(self):
        self.store.put("verify", "short", b"1", 10)
        self.store.put("verify", "long", b"1", 1000)
        self.clock.advance(sqlite_module.PURGE_INTERVAL)
        self.assertEqual(self.rows(), [("verify", "long")])

    def test_pending_delete_hides_the_row(self):
        self.store.put("verify", "k", b"1", 100)
        self.store.flush()
        self.assertTrue(self.successResultOf(self.store.delete("verify", "k")))
        self.assertEqual(self.successResultOf(self.store.scan("verify")), [])
        self.assertIsNone(self.successResultOf(self.store.get("verify", "k")))

    def test_a_file_that_cannot_be_opened_is_unavailable_then_recovers(self):
        blocker = os.path.join(self.dir, "not-a-dir")
        open(blocker, "w").close()
        store = open_store(f"sqlite:{blocker}/state.sqlite", self.clock)
        self.addCleanup(store.close)
        self.failureResultOf(store.get("verify", "k"), StoreUnavailable)
        self.failureResultOf(store.scan("verify"), StoreUnavailable)
        self.failureResultOf(store.delete("verify", "k"), StoreUnavailable)
        self.successResultOf(store.put("verify", "k", b"1", 100))  # queued: lost at the flush
        self.clock.advance(1)
        os.unlink(blocker)
        self.clock.advance(sqlite_module.REOPEN_INTERVAL)
        self.assertIsNone(self.successResultOf(store.get("verify", "k")))
        store.put("verify", "k", b"2", 100)
        store.flush()
        self.assertEqual(self.successResultOf(store.get("verify", "k")), b"2")

    def test_a_corrupt_file_is_unavailable(self):
        path = os.path.join(self.dir, "garbage.sqlite")
        with open(path, "wb") as f:
            f.write(b"this is not a database" * 100)
        store = open_store("sqlite:" + path, self.clock)
        self.addCleanup(store.close)
        self.failureResultOf(store.get("verify", "k"), StoreUnavailable)


class RedisContract(Contract, TestCase):
    server: RedisServer

    @classmethod
    def setUpClass(cls):
        if REDIS_SERVER is None:
            raise SkipTest("redis-server is not installed (tests/install-system-deps.sh)")
        cls.server = RedisServer().start()

    @classmethod
    def tearDownClass(cls):
        cls.server.stop()

    def setUp(self):
        socket.create_connection(("127.0.0.1", self.server.port)).sendall(b"FLUSHALL\r\n")
        self.store = open_store(self.server.url, reactor)
        self.addCleanup(self.store.close)
        return self.store.get("verify", "warm-up")

    def now(self):
        return reactor.seconds()

    @defer.inlineCallbacks
    def test_keys_are_prefixed(self):
        from mxbackup.state.resp import RedisProtocol  # noqa: F401 (the client under test)

        yield self.store.put("verify", "k", b"1", 100)
        raw = yield self.store._run("KEYS", "*")
        self.assertEqual(raw, [b"mxbackup:verify:k"])
        pttl = yield self.store._run("PTTL", "mxbackup:verify:k")
        self.assertTrue(95_000 < pttl <= 100_000)

    @defer.inlineCallbacks
    def test_down_is_fast_then_reconnects(self):
        yield self.store.put("verify", "k", b"1", 100)
        self.server.stop()
        started = reactor.seconds()
        with self.assertRaises(StoreUnavailable):
            yield self.store.get("verify", "k")
        with self.assertRaises(StoreUnavailable):
            yield self.store.get("verify", "k")
        with self.assertRaises(StoreUnavailable):
            yield self.store.put("verify", "k", b"1", 100)
        self.assertLess(reactor.seconds() - started, 0.5)
        self.server.start(self.server.port)
        self.store._failed_at = reactor.seconds() - RETRY_AFTER  # the retry delay is over
        yield self.store.put("verify", "k", b"2", 100)
        self.assertEqual((yield self.store.get("verify", "k")), b"2")

    @defer.inlineCallbacks
    def test_two_stores_share(self):
        other = open_store(self.server.url, reactor)
        self.addCleanup(other.close)
        yield self.store.put("verify", "k", b"shared", 100)
        self.assertEqual((yield other.get("verify", "k")), b"shared")

    @defer.inlineCallbacks
    def test_nothing_listening_is_unavailable(self):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        store = open_store(f"redis://127.0.0.1:{port}/3", reactor)
        with self.assertRaises(StoreUnavailable):
            yield store.get("verify", "k")
        yield store.close()
