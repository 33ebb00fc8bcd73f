"""Reading the queue at start-up: chunks of packed envelopes with what the scheduler files them
by, in worker processes when there are many."""

from __future__ import annotations

import os

import pytest

from helpers import sample_envelope
from mxbackup.queue import recovery
from mxbackup.queue.envelope import Envelope
from mxbackup.queue.packed import unpack


def write(env_dir, qid: str, **more) -> Envelope:
    env = sample_envelope(qid, 1.0, **more)
    (env_dir / qid).write_bytes(env.to_json())
    return env


def test_a_chunk_files_each_target_at_its_earliest_attempt(tmp_path):
    e1 = write(tmp_path, "Q1")
    e2 = write(tmp_path, "Q2", held=True)
    (tmp_path / "Q3").write_bytes(b"{not json")
    (tmp_path / "Q4").write_bytes(e1.to_json())  # names another message
    chunk = recovery.read_chunk(str(tmp_path), ["Q1", "Q2", "Q3", "Q4"])
    assert chunk.qids == ["Q1", "Q2"]
    assert [unpack(p) for p in chunk.packed] == [e1, e2]
    assert chunk.held == ["Q2"]
    assert chunk.at == {"example.com": (["Q1", "Q2"], [2, 2], [300.0, 300.0])}
    # a try a crash interrupted: due at once, filed on its own
    assert chunk.interrupted == [("Q1", "mx:other.test", 1), ("Q2", "mx:other.test", 1)]
    assert [qid for qid, _, _ in chunk.unreadable] == ["Q3", "Q4"]
    assert "names 'Q1'" in chunk.unreadable[1][1]


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: no workers")
def test_workers_give_the_same_chunks_in_order(tmp_path, monkeypatch):
    names = [f"Q{i:04}" for i in range(60)]
    for qid in names:
        write(tmp_path, qid)
    monkeypatch.setattr(recovery, "CHUNK", 7)
    alone = list(recovery.read_all(str(tmp_path), names, workers=1))
    shared = list(recovery.read_all(str(tmp_path), names, workers=2))
    assert [c.qids for c in shared] == [c.qids for c in alone]
    assert sum((c.qids for c in shared), []) == names
    ids = [q for c in shared for q in c.qids]
    assert all(a is b for a, b in zip(ids, names, strict=True))  # the caller's strings
    assert [c.at for c in shared] == [c.at for c in alone]


def test_workers_only_for_many_envelopes_and_no_other_thread(monkeypatch):
    monkeypatch.setattr(recovery, "PARALLEL_FROM", 10)
    # the suite's earlier tests may leave a thread behind (a CI run did): this test's own
    # premise is set, not assumed
    monkeypatch.setattr(recovery.threading, "active_count", lambda: 1)
    assert recovery.workers_for(60, 2) == 2 and recovery.workers_for(9, 2) == 0
    assert recovery.workers_for(60, 1) == 0  # one core: read in this process
    monkeypatch.setattr(recovery.threading, "active_count", lambda: 2)
    assert recovery.workers_for(60, 2) == 0  # forking beside another thread is not safe


def test_a_failing_pool_falls_back_to_this_process(tmp_path, monkeypatch):
    names = [f"Q{i:04}" for i in range(20)]
    for qid in names:
        write(tmp_path, qid)

    class NoPool:
        def __init__(self, *args, **kwargs):
            raise OSError("no /dev/shm")

    monkeypatch.setattr(recovery, "ProcessPoolExecutor", NoPool)
    monkeypatch.setattr(recovery, "CHUNK", 7)
    chunks = list(recovery.read_all(str(tmp_path), names, workers=2))
    assert sum((c.qids for c in chunks), []) == names


def test_the_try_log_makes_a_try_a_crash_interrupted_due_at_once(tmp_path):
    """``logged`` (``tries.read``): Q1's first recipient was in a try the envelope does not
    show; Q2's entries are what its envelope shows (the outcome was written): nothing."""
    write(tmp_path, "Q1")
    write(tmp_path, "Q2")
    logged = {"Q1": {0: 1}, "Q2": {0: 0, 1: 0}, "Q9": {0: 4}}
    chunk = recovery.read_chunk(str(tmp_path), ["Q1", "Q2"], logged=logged)
    q1, q2 = (unpack(p) for p in chunk.packed)
    assert (q1.recipients[0].attempts, q1.recipients[0].inflight) == (1, True)
    assert q2 == sample_envelope("Q2", 1.0)
    assert chunk.at == {"example.com": (["Q2"], [2], [300.0])}
    assert ("Q1", "example.com", 2) in chunk.interrupted


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: no workers")
def test_workers_apply_the_try_log_to_their_own_names(tmp_path, monkeypatch):
    names = [f"Q{i:04}" for i in range(30)]
    for qid in names:
        write(tmp_path, qid)
    monkeypatch.setattr(recovery, "CHUNK", 7)
    logged = {"Q0003": {1: 5}, "Q0020": {0: 2}}
    shared = list(recovery.read_all(str(tmp_path), names, workers=2, logged=logged))
    raised = {
        env.id: env.recipients
        for c in shared
        for env in map(unpack, c.packed)
        if any(r.attempts for r in env.recipients)
    }
    assert {q: [r.attempts for r in rs] for q, rs in raised.items()} == {
        "Q0003": [0, 5, 0, 0],
        "Q0020": [2, 0, 0, 0],
    }


def test_more_readers_than_cores(monkeypatch) -> None:
    """With a cold page cache reading a million envelopes waits on the disk: several readers
    per core (measured: 2 workers 84.5 s, 8 workers 50.8 s; warm, the same)."""
    monkeypatch.setattr(recovery.threading, "active_count", lambda: 1)  # forking is safe
    monkeypatch.setattr(recovery.os, "sched_getaffinity", lambda pid: {0, 1})
    assert recovery.workers_for(recovery.PARALLEL_FROM) == 8
    monkeypatch.setattr(recovery.os, "sched_getaffinity", lambda pid: {0, 1, 2})
    assert recovery.workers_for(recovery.PARALLEL_FROM) == recovery.MAX_READERS
    monkeypatch.setattr(recovery.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert recovery.workers_for(recovery.PARALLEL_FROM) == 16  # one per core at least
    monkeypatch.setattr(recovery.os, "sched_getaffinity", lambda pid: {0})
    assert recovery.workers_for(recovery.PARALLEL_FROM) == 0  # one core: in this process


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: no workers")
def test_readers_beside_a_running_server_give_way_to_it():
    """``background_pool``: started afresh (spawn: safe beside the reactor's threads), at a
    lower priority (eight readers on two cores took most of the CPU from the reactor: a NOOP
    waited 1.5 s while a queue of 677,000 loaded)."""
    pool = recovery.background_pool(2)
    assert pool is not None
    try:
        assert pool.submit(os.nice, 0).result(60) == os.nice(0) + recovery.BACKGROUND_NICE
    finally:
        pool.shutdown()
    assert recovery.background_pool(1) is None  # one core: the reactor's thread pool reads


_KILLED_SERVER = """
import os, signal, sys
from mxbackup.queue import recovery
if __name__ == "__main__":
    pool = recovery.background_pool(2)
    pids = {pool.submit(os.getpid).result(60) for _ in range(20)}
    print(" ".join(map(str, pids)), flush=True)
    os.kill(os.getpid(), signal.SIGKILL)
"""


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="one core: no workers")
def test_readers_die_with_a_server_killed_in_the_middle(tmp_path):
    """Regression: a pool's worker holds both ends of its own pipe, so after a ``kill -9`` of
    the server its readers waited for ever (50 of them were left by a day of tests)."""
    import subprocess
    import sys
    import time

    script = tmp_path / "server.py"
    script.write_text(_KILLED_SERVER)
    env = dict(os.environ, PYTHONPATH=os.getcwd())
    out = subprocess.run([sys.executable, str(script)], capture_output=True, env=env, timeout=60)
    pids = [int(p) for p in out.stdout.split()]
    assert out.returncode == -9 and pids, out.stderr
    deadline = time.monotonic() + 30
    while any(os.path.exists(f"/proc/{p}") for p in pids):  # polling for their exit
        assert time.monotonic() < deadline, "readers outlived the server"
        time.sleep(0.05)
