"""Paused delivery: kept on disk, obeyed by the scheduler, undone by resume."""

from __future__ import annotations

import json

import pytest
from outbound_world import MINUTE, World

from mxbackup.outbound.pause import Pauses


def test_state_survives_and_is_written_atomically(tmp_path):
    p = Pauses(str(tmp_path))
    assert not p.paused("example.com")
    p.pause("example.com")
    p.pause(None)
    assert json.loads((tmp_path / "paused.json").read_text()) == {
        "global": True,
        "routes": ["example.com"],
    }
    assert not (tmp_path / "paused.json.tmp").exists()
    again = Pauses(str(tmp_path))
    assert again.paused("anything") and again.routes == {"example.com"}
    again.resume(None)
    assert Pauses(str(tmp_path)).paused("example.com")
    assert not Pauses(str(tmp_path)).paused("other.test")


def test_an_unreadable_state_is_an_error_not_delivery(tmp_path):
    (tmp_path / "paused.json").write_text("{not json")
    with pytest.raises(ValueError, match="cannot read"):
        Pauses(str(tmp_path))


@pytest.mark.parametrize("route", ["example.com", None])
def test_paused_mail_is_queued_not_tried_until_resumed(tmp_path, route):
    w = World(tmp_path)
    w.scheduler.pause(route)
    env = w.queue()
    w.advance(20 * MINUTE)
    assert w.deliver.connections_with_mail == []
    assert env.recipients[0].attempts == 0  # no try counted while paused
    w.scheduler.resume(route)
    w.advance(1)
    assert w.scheduler.stats.delivered == 1


def test_pause_survives_a_restart(tmp_path):
    w = World(tmp_path)
    w.scheduler.pause("example.com")
    w.queue()
    w2 = World(tmp_path)
    w2.clock.advance(w.clock.seconds() - w2.clock.seconds())
    w2.scheduler.load(w2.spool.recover())
    w2.advance(5)
    assert w2.deliver.connections_with_mail == [] and len(w2.scheduler.queue) == 1
    w2.scheduler.resume("example.com")
    w2.advance(2)
    assert w2.scheduler.stats.delivered == 1


def test_resume_keeps_each_message_at_its_own_time(tmp_path):
    w = World(tmp_path)
    w.deliver.reply = lambda rcpt: (451, "4.3.0 later")
    env = w.queue()
    w.advance(1)  # tried once: next attempt in 15 minutes
    w.scheduler.pause(None)
    w.scheduler.resume(None)
    w.advance(5 * MINUTE)
    assert env.recipients[0].attempts == 1  # not tried at once by resume
