"""The maildir spool: commit protocol, fsync discipline, recovery after a crash."""

from __future__ import annotations

import os

import pytest
from twisted.internet import defer

from helpers import one_recipient_envelope, spool_files, sync_thread
from mxbackup.queue import rounds
from mxbackup.queue import spool as spool_module
from mxbackup.queue.envelope import Envelope, EnvelopeError
from mxbackup.queue.spool import SYNC_MODES, Spool


def commit(spool: Spool, data: bytes = b"hello\r\n") -> tuple[str, defer.Deferred]:
    inc = spool.incoming()
    inc.write(data)
    return inc.id, spool.commit(inc, one_recipient_envelope(inc.id))


def assert_commit_fails_leaving_nothing(spool: Spool, tmp_path, errno: int) -> None:
    """The commit's Deferred fails with ``errno`` and no trace of the message is left."""
    _, d = commit(spool)
    failures: list = []
    d.addErrback(failures.append)
    assert failures and failures[0].value.errno == errno
    root = tmp_path / "spool"
    assert spool_files(root, "new") == spool_files(root, "env") == spool_files(root, "tmp") == []


@pytest.fixture(params=SYNC_MODES)
def spool(tmp_path, request):
    s = Spool(str(tmp_path / "spool"), sync_thread, sync=request.param)
    s.recover()
    return s


def test_commit_makes_message_and_envelope_live(spool, tmp_path):
    qid, d = commit(spool)
    assert d.called and d.result is None
    root = tmp_path / "spool"
    assert spool_files(root, "new") == [qid] == spool_files(root, "env")
    assert spool_files(root, "tmp") == []
    assert (root / "new" / qid).read_bytes() == b"hello\r\n"
    (env,) = Spool(str(root), sync_thread).recover()
    assert env.id == qid and env.recipients[0].address == "u@example.com"


def test_commit_fsyncs_file_envelope_and_directories_before_firing(tmp_path, monkeypatch):
    spool = Spool(str(tmp_path / "spool"), sync_thread, sync="fsync")
    spool.recover()
    synced: list[str] = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    fired_after: list[list[str]] = []
    qid, d = commit(spool)
    d.addCallback(lambda _: fired_after.append(list(synced)))
    (seen,) = fired_after
    assert any(p.endswith(f"/tmp/{qid}") for p in seen)  # message data
    assert any(p.endswith(f"/tmp/{qid}.env") for p in seen)  # envelope data
    assert any(p.endswith("/spool/new") for p in seen)  # directory entries
    assert any(p.endswith("/spool/env") for p in seen)


@pytest.mark.skipif("syncfs" not in SYNC_MODES, reason="no syncfs(2) here")
def test_syncfs_commit_is_one_sync_after_the_renames_and_an_update_two(tmp_path, monkeypatch):
    """syncfs mode: a round of commits makes data and names durable with one syncfs(2) of the
    spool's file system, after both renames and before the Deferred fires; a round that
    replaces an envelope syncs its data while it is only in tmp/, then the names."""
    spool = Spool(str(tmp_path / "spool"), sync_thread, sync="syncfs")
    spool.recover()
    seen: list[tuple[list[str], list[str], list[str]]] = []
    real = rounds.SYNCFS
    root = tmp_path / "spool"

    def syncfs(fd):
        assert os.readlink(f"/proc/self/fd/{fd}") == str(root)
        seen.append((spool_files(root, "tmp"), spool_files(root, "new"), spool_files(root, "env")))
        return real(fd)

    monkeypatch.setattr(rounds, "SYNCFS", syncfs)
    qid, d = commit(spool)
    assert d.called and d.result is None
    assert seen == [([], [qid], [qid])]
    seen.clear()
    d = spool.update(one_recipient_envelope(qid))
    assert d.called and d.result is None
    ((tmp, new, env), after) = seen
    assert len(tmp) == 1 and tmp[0].startswith(qid + ".env.") and new == env == [qid]
    assert after == ([], [qid], [qid])


def test_a_failed_sync_is_a_failed_commit(tmp_path, monkeypatch):
    spool = Spool(str(tmp_path / "spool"), sync_thread, sync="fsync")
    spool.recover()

    def broken(path):
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(rounds, "fsync_dir", broken)
    assert_commit_fails_leaving_nothing(spool, tmp_path, errno=5)


def test_group_commit_batches_concurrent_transactions(tmp_path):
    rounds: list[int] = []
    waiting: list[tuple[defer.Deferred, object, tuple]] = []

    def manual(fn, *args):
        rounds.append(len(args[-1]))  # the operations of the round
        d: defer.Deferred = defer.Deferred()
        waiting.append((d, fn, args))
        return d

    s = Spool(str(tmp_path / "spool"), manual)
    s.open()
    results = [commit(s)[1] for _ in range(4)]
    assert rounds == [1]  # first round started at once, three waiting
    d, fn, args = waiting.pop()
    d.callback(fn(*args))
    assert rounds == [1, 3]  # the three waiting share the second round
    d, fn, args = waiting.pop()
    d.callback(fn(*args))
    assert all(r.called for r in results)
    assert len(spool_files(tmp_path / "spool", "new")) == 4


class Merging:
    """A runner that ``merges`` as the spool process does; its requests wait in ``sent``."""

    merges = True

    def __init__(self) -> None:
        self.sent: list[tuple[defer.Deferred, object, tuple]] = []

    def __call__(self, fn, *args):
        d: defer.Deferred = defer.Deferred()
        self.sent.append((d, fn, args))
        return d


def merging_spool(tmp_path) -> tuple[Spool, list[tuple[defer.Deferred, object, tuple]]]:
    runner = Merging()
    return Spool(str(tmp_path / "spool"), runner), runner.sent


def test_a_merging_runner_gets_each_change_at_once_and_answers_each(tmp_path):
    """The spool process gathers rounds itself (``spoolchild``): it is sent every change as
    it comes, and the waiters hear in order, the next request already on its way."""
    s, sent = merging_spool(tmp_path)
    s.open()
    results = [commit(s)[1] for _ in range(3)]
    assert [len(args[-1]) for _, _, args in sent] == [1, 1, 1]  # none held back
    for d, fn, args in sent:
        d.callback(fn(*args))
    assert all(r.called for r in results)
    assert len(spool_files(tmp_path / "spool", "new")) == 3


def test_changes_made_together_go_to_a_merging_runner_as_one_request(tmp_path):
    """``together``: a connection's batch of outcomes is one request (one pickle, one frame,
    one answer), sent as the block ends; each waiter still hears its own outcome."""
    s, sent = merging_spool(tmp_path)
    s.open()
    with s.together():
        results = [commit(s)[1] for _ in range(3)]
        with s.together():  # nested: the outer block sends
            results.append(commit(s)[1])
        assert sent == []  # held until the block ends
    ((d, fn, args),) = sent
    assert len(args[-1]) == 4
    outcomes = fn(*args)
    outcomes[1] = OSError(28, "No space left on device")  # one of them failed
    d.callback(outcomes)
    failed: list = []
    results[1].addErrback(failed.append)
    assert [r.called for r in results] == [True] * 4 and failed
    assert all(getattr(r, "result", None) is None for i, r in enumerate(results) if i != 1)
    commit(s)  # after the block: at once, as before
    assert len(sent) == 2 and len(sent[1][2][-1]) == 1


def test_changes_made_together_are_sent_even_when_the_block_raises(tmp_path):
    s, sent = merging_spool(tmp_path)
    s.open()
    with pytest.raises(ValueError), s.together():
        result = commit(s)[1]
        raise ValueError("a bug after the change was submitted")
    ((d, fn, args),) = sent  # not lost: its waiter hears
    d.callback(fn(*args))
    assert result.called


def test_together_changes_nothing_for_a_runner_that_does_not_merge(tmp_path):
    calls: list[int] = []

    def inline(fn, *args):
        calls.append(len(args[-1]))
        return defer.succeed(fn(*args))

    s = Spool(str(tmp_path / "spool"), inline)
    s.open()
    with s.together():
        results = [commit(s)[1] for _ in range(2)]
        assert calls == [1, 1]  # each its own round at once
    assert all(r.called for r in results)


def test_the_next_round_starts_before_the_last_one_s_waiters_are_answered(tmp_path):
    order: list[str] = []
    waiting: list[tuple[defer.Deferred, object, tuple]] = []

    def manual(fn, *args):
        order.append(f"round of {len(args[-1])}")
        d: defer.Deferred = defer.Deferred()
        waiting.append((d, fn, args))
        return d

    s = Spool(str(tmp_path / "spool"), manual)
    s.open()
    first = commit(s)[1]
    first.addCallback(lambda _: order.append("250"))
    commit(s)
    d, fn, args = waiting.pop(0)
    d.callback(fn(*args))
    assert order == ["round of 1", "round of 1", "250"]


def test_recover_removes_what_a_crash_left_and_keeps_the_rest(spool, tmp_path):
    root = tmp_path / "spool"
    live, _ = commit(spool)
    (root / "tmp" / "HALF").write_bytes(b"half a message")
    (root / "tmp" / "HALF.env").write_bytes(b"{")
    # a crash between the renames:
    (root / "env" / "NOMSG").write_bytes(one_recipient_envelope("NOMSG").to_json())
    (root / "new" / "NOENV").write_bytes(b"finished, envelope already removed")
    envs = Spool(str(root), sync_thread).recover()
    assert [e.id for e in envs] == [live]
    assert spool_files(root, "tmp") == []
    assert spool_files(root, "new") == [live] == spool_files(root, "env")


def test_recover_keeps_unreadable_envelopes_for_the_operator(spool, tmp_path):
    root = tmp_path / "spool"
    (root / "new" / "BAD").write_bytes(b"message")
    (root / "env" / "BAD").write_bytes(b'{"version": 99}')
    assert Spool(str(root), sync_thread).recover() == []
    assert spool_files(root, "corrupt") == ["BAD", "BAD.env"]


def test_update_and_remove(spool, tmp_path):
    root = tmp_path / "spool"
    qid, _ = commit(spool)
    env = one_recipient_envelope(qid)
    env.recipients[0].state = "delivered"
    spool.update(env)
    (loaded,) = Spool(str(root), sync_thread).recover()
    assert loaded.recipients[0].state == "delivered"
    assert spool_files(root, "tmp") == []
    spool.remove(qid)
    assert spool_files(root, "new") == [] == spool_files(root, "env")


def test_failed_commit_leaves_nothing(spool, tmp_path, monkeypatch):
    def boom(*a):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rounds, "_write_new", boom)
    assert_commit_fails_leaving_nothing(spool, tmp_path, errno=28)


def test_envelope_versions():
    env = one_recipient_envelope("X")
    assert Envelope.from_json(env.to_json()) == env
    with pytest.raises(EnvelopeError):
        Envelope.from_json(b'{"version": 2, "id": "X"}')
    with pytest.raises(EnvelopeError):
        Envelope.from_json(b"not json")
    with pytest.raises(EnvelopeError):
        Envelope.from_json(b'{"version": 1, "id": "X"}')


def test_large_message_spills_to_tmp_and_commits_whole(spool, tmp_path):
    from mxbackup.queue.incoming import SPILL

    inc = spool.incoming()
    chunk = b"x" * 65534 + b"\r\n"
    for _ in range(SPILL // len(chunk) + 3):
        inc.write(chunk)
    assert spool_files(tmp_path / "spool", "tmp") == [inc.id]  # spilled while arriving
    d = spool.commit(inc, one_recipient_envelope(inc.id))
    assert d.called and d.result is None
    data = (tmp_path / "spool" / "new" / inc.id).read_bytes()
    assert data == chunk * (SPILL // len(chunk) + 3)


def test_small_message_never_touches_the_disk_before_commit(spool, tmp_path):
    inc = spool.incoming()
    inc.write(b"small\r\n")
    assert spool_files(tmp_path / "spool", "tmp") == []
    inc.abort()
    assert spool_files(tmp_path / "spool", "tmp") == []


def test_free_space_is_cached_but_measured_afresh_on_demand(tmp_path, monkeypatch):
    """Regression: acceptance must resume as soon as space returns, not FREE_SPACE_TTL later
    (the cached figure is only a fast path for yes: one below at_least is measured again)."""
    now = [100.0]
    s = Spool(str(tmp_path / "spool"), sync_thread, clock=lambda: now[0])
    s.open()
    avail = [10]

    class St:
        f_frsize = 4096

        @property
        def f_bavail(self) -> int:
            return avail[0]

    monkeypatch.setattr(spool_module.os, "statvfs", lambda path: St())
    assert s.free_space() == 10 * 4096
    avail[0] = 1000
    assert s.free_space() == 10 * 4096  # cached within the TTL
    assert s.free_space(at_least=11 * 4096) == 1000 * 4096
    avail[0] = 5
    now[0] += spool_module.FREE_SPACE_TTL
    assert s.free_space() == 5 * 4096  # the TTL ran out
