"""The composition root: what starting the service does beyond starting its parts."""

from __future__ import annotations

import gc
import signal
from types import SimpleNamespace
from typing import Any

from mxbackup.service import MXBackupService


class StubScheduler:
    started = False
    queue: Any = {}
    recorder = SimpleNamespace(left_to_snapshot=0)
    for_snapshot: bool | None = None

    def start(self) -> None:
        self.started = True

    def stop(self, for_snapshot: bool = False) -> None:
        self.started, self.for_snapshot = False, for_snapshot


def test_start_freezes_what_lives_as_long_as_the_server() -> None:
    """Regression: the objects alive at start-up (Twisted's, the recovered queue) are
    frozen, so the cyclic GC's full collections (a 38 ms pause, measured) skip them."""
    scheduler = StubScheduler()
    top = MXBackupService(Any, SnapshotSpool(), None, scheduler, None)  # type: ignore[arg-type]
    old_hup = signal.getsignal(signal.SIGHUP)
    gc.unfreeze()
    try:
        top.startService()
        assert scheduler.started
        assert gc.get_freeze_count() > 0
        top.stopService()
    finally:
        gc.unfreeze()
        signal.signal(signal.SIGHUP, old_hup)


def _config_with_dns(servers: list[str] | None) -> Any:
    from pathlib import Path

    from mxbackup import config as config_module

    data: dict[str, Any] = {
        "server": {"hostname": "mx2.example.net", "listen": ["tcp:0"], "spool": "spool"},
        "routes": [{"domain": "example.com", "target_host": "127.0.0.1"}],
    }
    if servers is not None:
        data["delivery"] = {"dns_servers": servers}
    return config_module.parse(data, str(Path("test.yaml")))


def test_dns_servers_replace_the_system_resolver() -> None:
    """Regression (issue 15): with delivery.dns_servers, Twisted's createResolver also asked
    /etc/resolv.conf's servers (and re-read that file).  Now only the configured ones are
    asked, round robin, and no resolv.conf is read."""
    from twisted.internet.task import Clock
    from twisted.names import client

    from mxbackup.check_wiring import make_resolver

    resolver = make_resolver(_config_with_dns(["127.0.0.53", "[::1]:5353"]), Clock())
    (network,) = [r for r in resolver.resolvers if isinstance(r, client.Resolver)]
    assert network.servers == [("127.0.0.53", 53), ("::1", 5353)]
    assert network.resolv is None  # no resolv.conf to read or re-read
    picked = {network.pickServer() for _ in range(4)}
    assert picked == {("127.0.0.53", 53), ("::1", 5353)}


def test_without_dns_servers_the_system_resolver_is_used() -> None:
    from twisted.internet.task import Clock
    from twisted.names import client

    from mxbackup.check_wiring import make_resolver

    resolver = make_resolver(_config_with_dns(None), Clock())
    (network,) = [r for r in resolver.resolvers if isinstance(r, client.Resolver)]
    assert network.resolv == b"/etc/resolv.conf"


class _Reconfigurable:
    def reconfigure(self, config: Any) -> None:
        self.config = config


def test_reload_names_the_keys_that_need_a_restart_against_what_runs(tmp_path) -> None:
    """Regression (issue 15): the note said ``server.metrics`` (the key is top-level
    ``metrics``) and came again after the value was put back (it compared with the last
    reload, not with what the server runs)."""
    import yaml

    from mxbackup import config as config_module

    def write(**extra: Any) -> str:
        data: dict[str, Any] = {
            "server": {"hostname": "mx.test", "listen": ["tcp:2525"], "spool": "spool"},
            "routes": [{"domain": "example.com", "target_host": "127.0.0.1"}],
            **extra,
        }
        path = tmp_path / "mx.yaml"
        path.write_text(yaml.safe_dump(data))
        return str(path)

    started = config_module.load(write())
    top = MXBackupService(started, None, _Reconfigurable(), _Reconfigurable(), None)  # type: ignore[arg-type]
    write(metrics={"listen": "tcp:9125:interface=127.0.0.1"})
    assert top.reload()["restart_needed_for"] == ["metrics"]
    write()  # put back: what runs again
    assert top.reload()["restart_needed_for"] == []
    path = write()
    data = yaml.safe_load(open(path))
    data["server"]["listen"] = ["tcp:2526"]
    (tmp_path / "mx.yaml").write_text(yaml.safe_dump(data))
    assert top.reload()["restart_needed_for"] == ["server.listen"]


def test_reload_refuses_what_start_up_would(tmp_path) -> None:
    """Regression (review): reload only read the YAML, so it took a route to our own
    listening address (or a bad endpoint) that start-up and check-config refuse."""
    import pytest
    import yaml

    from mxbackup import config as config_module

    data: dict[str, Any] = {
        "server": {"hostname": "mx.test", "listen": ["tcp:2525"], "spool": "spool"},
        "routes": [{"domain": "example.com", "target_host": "192.0.2.1"}],
    }
    path = tmp_path / "mx.yaml"
    path.write_text(yaml.safe_dump(data))
    started = config_module.load(str(path))
    top = MXBackupService(started, None, _Reconfigurable(), _Reconfigurable(), None)  # type: ignore[arg-type]
    data["routes"][0].update({"target_host": "127.0.0.1", "port": 2525})
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ValueError, match="is one of our own listening addresses"):
        top.reload()
    assert top.config is started  # the old one stays


class QueueScheduler(StubScheduler):
    def __init__(self, queue: Any) -> None:
        self.queue = queue


class SnapshotSpool:
    def __init__(self, error: OSError | None = None, from_snapshot: bool = False) -> None:
        self.written: list[list[tuple[str, bytes]]] = []
        self.error = error
        self.from_snapshot = from_snapshot

    def write_snapshot(self, packed: list[tuple[str, bytes]], keep_free: int) -> int:
        assert keep_free == CONFIG.server.min_free_space
        if self.error is not None:
            raise self.error
        self.written.append(packed)
        return len(packed)


CONFIG: Any = SimpleNamespace(server=SimpleNamespace(min_free_space=12345))


def _queue(n: int) -> Any:
    from mxbackup.outbound.envelopes import Envelopes

    queue = Envelopes()
    queue.put_packed([f"Q{i}" for i in range(n)], [b"p%d" % i for i in range(n)])
    return queue


def test_a_clean_stop_leaves_a_big_queue_s_snapshot(monkeypatch) -> None:
    """Issue 17 (goal 4): the queue's packed envelopes for the next start-up, after the
    spool process's last round; a small queue gets none (its files read in under a second)."""
    from mxbackup import service as service_module

    monkeypatch.setattr(service_module, "SNAPSHOT_FROM", 3)
    for n, snapshots in [(3, 1), (2, 0)]:
        spool, scheduler = SnapshotSpool(), QueueScheduler(_queue(n))
        top = MXBackupService(CONFIG, spool, None, scheduler, None)  # type: ignore[arg-type]
        top.stopService()
        assert [len(packed) for packed in spool.written] == [n] * snapshots
        assert scheduler.for_snapshot is bool(snapshots)  # its try counts: left to it


def test_a_run_started_from_a_snapshot_writes_one_however_small_its_queue(monkeypatch) -> None:
    """Review: the try counts the last snapshot carried are in memory only (their files were
    left as they were); a stop that wrote no snapshot for a small queue lost them.  And a
    snapshot decided at the stop's start is written even if the queue shrank meanwhile."""
    from mxbackup import service as service_module

    monkeypatch.setattr(service_module, "SNAPSHOT_FROM", 3)
    spool, scheduler = SnapshotSpool(from_snapshot=True), QueueScheduler(_queue(1))
    MXBackupService(CONFIG, spool, None, scheduler, None).stopService()  # type: ignore[arg-type]
    assert scheduler.for_snapshot and [len(packed) for packed in spool.written] == [1]
    spool, scheduler = SnapshotSpool(), QueueScheduler(_queue(2))
    scheduler.recorder = SimpleNamespace(left_to_snapshot=2)  # (3 queued when it was decided)
    MXBackupService(CONFIG, spool, None, scheduler, None).stopService()  # type: ignore[arg-type]
    assert [len(packed) for packed in spool.written] == [2]


def test_a_snapshot_that_cannot_be_written_does_not_fail_the_stop(monkeypatch) -> None:
    from twisted.logger import globalLogPublisher

    from mxbackup import service as service_module

    monkeypatch.setattr(service_module, "SNAPSHOT_FROM", 1)
    seen: list[dict] = []
    globalLogPublisher.addObserver(seen.append)
    try:
        spool, scheduler = (
            SnapshotSpool(OSError(28, "No space left on device")),
            QueueScheduler(_queue(2)),
        )
        scheduler.recorder = SimpleNamespace(left_to_snapshot=2)
        top = MXBackupService(CONFIG, spool, None, scheduler, None)  # type: ignore[arg-type]
        results: list[Any] = []
        top.stopService().addBoth(results.append)
    finally:
        globalLogPublisher.removeObserver(seen.append)
    assert results == [None]
    assert any("no snapshot of the queue" in e.get("log_format", "") for e in seen)
    assert any("kept in memory for the snapshot, are lost" in e.get("log_format", "") for e in seen)


def test_no_snapshot_while_the_queue_is_still_being_read(monkeypatch) -> None:
    """A stop in the middle of a load in the background (``queue.background``): the queue in
    memory is part of it; the last snapshot stays (its records are checked file by file)."""
    from mxbackup import service as service_module

    monkeypatch.setattr(service_module, "SNAPSHOT_FROM", 3)
    spool = SnapshotSpool()
    top = MXBackupService(CONFIG, spool, None, QueueScheduler(_queue(5)), None)  # type: ignore[arg-type]
    top.background_load = SimpleNamespace(progress=lambda: {"loaded": 5, "of": 9})  # type: ignore[assignment]
    top.stopService()
    assert spool.written == []
    top.background_load = SimpleNamespace(progress=lambda: None)  # type: ignore[assignment]
    top.stopService()
    assert [len(packed) for packed in spool.written] == [5]


def test_the_end_of_a_load_in_the_background(monkeypatch) -> None:
    """The scheduler is told (it probes the targets met and never flushed), the try log
    rotates again, what the load built is frozen (the cyclic GC's full collections
    traversed its containers: 65-112 ms each, about once a second during a drain of 700,000,
    a quarter of that since), the C heap is trimmed."""
    from mxbackup import service as service_module

    class Loading(StubScheduler):
        probed = False

        def loading(self, begins: bool = True) -> None:
            self.probed = not begins  # (its targets were probed as they were met)

    trims: list[bool] = []
    monkeypatch.setattr(service_module.heap, "give_back", lambda: trims.append(True))
    scheduler = Loading()
    spool = SimpleNamespace(try_log=SimpleNamespace(carried={"Q1": {0: 1}}))
    top = MXBackupService(Any, spool, None, scheduler, None)  # type: ignore[arg-type]
    gc.unfreeze()
    try:
        top._queue_loaded()
        assert scheduler.probed and trims == [True] and spool.try_log.carried == {}
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_a_big_queue_is_left_to_the_background_pinned(tmp_path, monkeypatch) -> None:
    """``_load_queue``: a queue of ``BACKGROUND_FROM`` or more is not read before listening;
    recovery's window is pinned first and the try log keeps its lines till the load ends.
    A smaller one is read at once, as before."""
    from helpers import committed, sync_thread
    from mxbackup import service as service_module
    from mxbackup.queue import checkpoint, recoverysteps
    from mxbackup.queue.spool import Spool

    root = tmp_path / "spool"
    committed(root, 3)

    class Loads(StubScheduler):
        def load(self, chunks: Any) -> None:
            self.loaded = [q for chunk in chunks for q in chunk.qids]

    monkeypatch.setattr(recoverysteps, "BACKGROUND_FROM", 3)
    big, scheduler = Spool(str(root), sync_thread), Loads()
    recovery = service_module._load_queue(big, scheduler)  # type: ignore[arg-type]
    assert recovery is not None and recovery.count == 3 and not hasattr(scheduler, "loaded")
    assert (root / checkpoint.PIN).exists() and big.try_log.carried is recovery.logged
    checkpoint.unpin(str(root))
    monkeypatch.setattr(recoverysteps, "BACKGROUND_FROM", 4)
    small, scheduler = Spool(str(root), sync_thread), Loads()
    assert service_module._load_queue(small, scheduler) is None  # type: ignore[arg-type]
    assert len(scheduler.loaded) == 3 and small.try_log.carried == {}
    assert not (root / checkpoint.PIN).exists()


def test_a_load_in_the_background_is_announced_to_the_scheduler() -> None:
    """Without ``loading()`` a flush during the load would not cover what is read later."""
    from mxbackup.queue.recoverysteps import Recovery

    class Told(StubScheduler):
        told: list[bool] = []

        def loading(self, begins: bool = True) -> None:
            self.told.append(begins)

        def load_chunk(self, chunk: Any) -> None:
            pass

    scheduler = Told()
    spool = SimpleNamespace(try_log=SimpleNamespace(carried={"Q1": {0: 1}}))
    top = MXBackupService(Any, spool, None, scheduler, None)  # type: ignore[arg-type]
    top.load_in_background(Recovery("/nonexistent", "syncfs", None), 0)
    assert scheduler.told == [True] and top.background_load is not None
    top._queue_load_stopped()  # (the load gave up)
    assert scheduler.told == [True, False] and spool.try_log.carried == {}
