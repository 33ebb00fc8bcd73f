"""Queueing DSNs: read through the spool, committed like any message, handed back."""

from __future__ import annotations

from helpers import base_config, spool_files, sync_thread
from mxbackup import config as config_module
from mxbackup.outbound.notify import DsnQueue
from mxbackup.queue.envelope import Envelope, Recipient
from mxbackup.queue.spool import Spool
from mxbackup.stats import Stats
from mxbackup.wire.contract import Outcome

NOW = 1_800_000_000.0


def setup(tmp_path, sender="s@sender.test", body=b"Subject: hi\r\n\r\nbody\r\n", routes=()):
    data = base_config(tmp_path)
    data["routes"] += list(routes)
    config = config_module.parse(data, "test.yaml")
    spool = Spool(str(tmp_path / "spool"), sync_thread, clock=lambda: NOW)
    spool.recover()
    inc = spool.incoming()
    inc.write(body)
    env = Envelope(
        id=inc.id,
        sender=sender,
        recipients=[Recipient("a@example.com", "example.com", state="failed")],
        received_at=NOW - 60,
        size=inc.size,
    )
    spool.commit(inc, env)
    return DsnQueue(spool, config, Stats()), spool, env


def queued(d) -> list:
    got: list = []
    d.addCallback(got.append)
    return got


def test_dsn_committed_from_null_sender_to_the_sender_by_mx(tmp_path):
    dsns, spool, env = setup(tmp_path)
    failed = [(env.recipients[0], Outcome("permfail", 550, "5.1.1 no"))]
    (dsn,) = queued(dsns.notify(env, failed, NOW, "failed"))
    assert dsn.sender == "" and dsn.received_at == NOW and dsn.helo == "mx2.example.net"
    assert [(r.address, r.route) for r in dsn.recipients] == [("s@sender.test", None)]
    assert sorted(spool_files(tmp_path / "spool", "env")) == sorted([env.id, dsn.id])
    data = spool.read_message(dsn.id)
    assert len(data) == dsn.size and b"Subject: hi" in data  # the original's headers
    assert dsns.stats.dsn_sent == 1


def test_dsn_to_a_sender_with_a_route_goes_by_that_route(tmp_path):
    route = {"domain": "sender.test", "target_host": "127.0.0.1", "port": 9}
    dsns, _, env = setup(tmp_path, routes=[route])
    (dsn,) = queued(
        dsns.notify(env, [(env.recipients[0], Outcome("permfail", 550, "x"))], NOW, "failed")
    )
    assert dsn.recipients[0].route == "sender.test"


def test_no_dsn_to_the_null_sender_or_for_auto_submitted_mail(tmp_path):
    for i, (sender, body) in enumerate(
        [
            ("", b"Subject: x\r\n\r\nb\r\n"),
            ("s@x.test", b"Auto-Submitted: auto-replied\r\n\r\nb\r\n"),
        ]
    ):
        dsns, _, env = setup(tmp_path / str(i), sender=sender, body=body)
        rcpts = [(env.recipients[0], Outcome("permfail", 550, "x"))]
        assert queued(dsns.notify(env, rcpts, NOW, "failed")) == [None]
        assert spool_files(tmp_path / str(i) / "spool", "env") == [env.id]
        assert dsns.stats.dsn_sent == 0


def test_only_the_start_of_the_original_is_read(tmp_path, monkeypatch):
    dsns, spool, env = setup(tmp_path)
    reads: list = []
    real = spool.read_message
    monkeypatch.setattr(
        spool, "read_message", lambda qid, limit=-1: reads.append(limit) or real(qid, limit)
    )
    queued(dsns.notify(env, [(env.recipients[0], Outcome("permfail", 550, "x"))], NOW, "failed"))
    assert reads == [256 * 1024]
