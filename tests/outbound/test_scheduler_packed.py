"""The scheduler's tests again with every idle envelope packed at each tick (``KEEP = 0``):
the same outcomes whether a waiting message is an object or packed."""

from __future__ import annotations

import pytest
from test_scheduler import *  # noqa: F403 - the same tests, collected again here

from mxbackup.outbound import envelopes


@pytest.fixture(autouse=True)
def pack_everything(monkeypatch):
    monkeypatch.setattr(envelopes, "KEEP", 0)


def test_mail_waiting_for_a_dead_primary_is_packed_and_delivered_when_it_returns(tmp_path):
    w = World(tmp_path)  # noqa: F405
    w.deliver.up = False
    for i in range(50):
        w.queue(rcpts=(f"u{i}@example.com",))
    w.advance(16 * MINUTE)  # noqa: F405 - the retry: no connection, counted in memory
    assert w.scheduler.queue.objects() == 0 and len(w.scheduler.queue) == 50
    attempts = {e.recipients[0].attempts for e in w.scheduler.queue.view().values()}
    assert attempts == {2}  # the counts kept in memory only were packed with them
    w.deliver.up = True
    w.advance(31)
    assert w.scheduler.stats.delivered == 50 and len(w.scheduler.queue) == 0
