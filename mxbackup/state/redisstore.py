"""The shared state store: Redis (``redis://[:password@]HOST:PORT/DB``), for several nodes.

Keys are ``mxbackup:<namespace>:<key>``; ``put`` is ``SET key value PX ttl``, so expiry is
Redis's own (the server's clock) and the store is bounded by it.  One connection, pipelined.

Down is fast: a connection attempt has ``CONNECT_TIMEOUT`` seconds, a command
``COMMAND_TIMEOUT`` seconds (then the connection is dropped and every waiting command errbacks
``StoreUnavailable``), and after a failure the store answers ``StoreUnavailable`` at once for
``RETRY_AFTER`` seconds before it tries to connect again (on the next command: reconnecting
is automatic and costs nothing while nobody asks).
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol
from twisted.logger import Logger

from mxbackup.config.stores import StoreURL
from mxbackup.state.base import StoreUnavailable
from mxbackup.state.resp import RedisProtocol

log = Logger(namespace="mxbackup.state")

CONNECT_TIMEOUT = 1.0
COMMAND_TIMEOUT = 2.0
RETRY_AFTER = 1.0
SCAN_COUNT = 1000


def glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


class RedisStore:
    def __init__(self, url: StoreURL, reactor) -> None:
        self.url = url
        self.clock = reactor
        self._conn: RedisProtocol | None = None
        self._connecting: list[defer.Deferred] | None = None
        self._failed_at: float | None = None
        self._closed = False
        self.errors = 0

    def _key(self, namespace: str, key: str) -> str:
        return f"mxbackup:{namespace}:{key}"

    # -- the connection ------------------------------------------------------------------
    def _client(self) -> defer.Deferred:
        if self._conn is not None and self._conn.connected_:
            return defer.succeed(self._conn)
        if self._closed:
            return defer.fail(StoreUnavailable("state store closed"))
        if self._connecting is not None:
            d: defer.Deferred = defer.Deferred()
            self._connecting.append(d)
            return d
        if self._failed_at is not None and self.clock.seconds() - self._failed_at < RETRY_AFTER:
            return defer.fail(StoreUnavailable(f"redis {self._where()} is unavailable"))
        self._connecting = []
        d = defer.Deferred()
        self._connecting.append(d)
        self._connect().addBoth(self._connected)
        return d

    def _where(self) -> str:
        return f"{self.url.host}:{self.url.port}/{self.url.db}"

    @defer.inlineCallbacks
    def _connect(self):
        endpoint = HostnameEndpoint(
            self.clock, self.url.host, self.url.port, timeout=CONNECT_TIMEOUT
        )
        try:
            proto = yield connectProtocol(endpoint, RedisProtocol())
        except Exception as e:
            raise StoreUnavailable(f"redis {self._where()}: {e}") from e
        if self.url.password:
            yield self._timed(proto, "AUTH", self.url.password)
        if self.url.db:
            yield self._timed(proto, "SELECT", self.url.db)
        return proto

    def _connected(self, result) -> None:
        waiting, self._connecting = self._connecting or [], None
        if isinstance(result, RedisProtocol):
            if self._conn is None or self._failed_at is not None:
                log.info("state store: connected to redis {where}", where=self._where())
            self._conn, self._failed_at = result, None
            for d in waiting:
                d.callback(result)
            return
        self._failure(result.value)
        for d in waiting:
            d.errback(result)

    def _failure(self, error: BaseException) -> None:
        self.errors += 1
        if self._failed_at is None:
            log.warn("state store: redis {where} down: {error}", where=self._where(), error=error)
        self._failed_at = self.clock.seconds()

    def _timed(self, proto: RedisProtocol, *args) -> defer.Deferred:
        d = proto.command(*args)
        if d.called:
            return d
        timer = self.clock.callLater(COMMAND_TIMEOUT, self._timeout, proto)
        return d.addBoth(_cancelling(timer))

    def _timeout(self, proto: RedisProtocol) -> None:
        self._failure(StoreUnavailable("redis command timed out"))
        if proto.transport is not None:
            proto.transport.abortConnection()

    def _run(self, *args) -> defer.Deferred:
        def send(proto: RedisProtocol) -> defer.Deferred:
            return self._timed(proto, *args)

        d = self._client().addCallback(send)
        return d.addErrback(self._unavailable)

    def _unavailable(self, failure):
        if failure.check(StoreUnavailable):
            return failure
        self._failure(failure.value)
        raise StoreUnavailable(f"redis {self._where()}: {failure.getErrorMessage()}")

    # -- the interface ---------------------------------------------------------------------
    def get(self, namespace: str, key: str) -> defer.Deferred:
        return self._run("GET", self._key(namespace, key))

    def put(self, namespace: str, key: str, value: bytes, ttl: float) -> defer.Deferred:
        name = self._key(namespace, key)
        if ttl <= 0:
            d = self._run("DEL", name)
        else:
            d = self._run("SET", name, value, "PX", max(1, int(ttl * 1000)))
        return d.addCallback(lambda _: None)

    def delete(self, namespace: str, key: str) -> defer.Deferred:
        return self._run("DEL", self._key(namespace, key)).addCallback(lambda n: n > 0)

    @defer.inlineCallbacks
    def scan(self, namespace: str, prefix: str = ""):
        head = self._key(namespace, "")
        pattern = glob_escape(head + prefix) + "*"
        cursor, names = b"0", set()
        while True:
            cursor, found = yield self._run("SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT)
            names.update(found)
            if cursor == b"0":
                break
        ordered = sorted(names)
        replies = yield defer.gatherResults(
            [self._run(cmd, name) for name in ordered for cmd in ("GET", "PTTL")],
            consumeErrors=True,
        ).addErrback(lambda f: f.value.subFailure)
        now = self.clock.seconds()
        entries = []
        for i, name in enumerate(ordered):
            value, pttl = replies[2 * i], replies[2 * i + 1]
            if value is None or pttl == -2:
                continue
            expires = float("inf") if pttl < 0 else now + pttl / 1000
            entries.append((name.decode()[len(head) :], value, expires))
        return entries

    def close(self) -> defer.Deferred:
        self._closed = True
        if self._conn is not None and self._conn.connected_:
            lost = self._conn.lost
            self._conn.transport.loseConnection()
            return lost
        return defer.succeed(None)


def _cancelling(timer):
    def cancel(result):
        if timer.active():
            timer.cancel()
        return result

    return cancel
