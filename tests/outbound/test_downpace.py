"""Tries at a target that is down, paced over turns of the reactor (mxbackup.outbound.downpace)."""

from __future__ import annotations

import pytest
from twisted.internet.task import Clock

from mxbackup.outbound import downpace
from mxbackup.outbound.downpace import DownPace


@pytest.fixture(autouse=True)
def small(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(downpace, "PER_TICK", 6)
    monkeypatch.setattr(downpace, "PER_TURN", 2)


def test_a_tick_is_spread_over_its_turns_and_no_more() -> None:
    clock, turns = Clock(), []
    pace = DownPace(clock, lambda: turns.append(pace.later) or True)  # always full
    assert pace.share(extra=False) == 2 and pace.share(extra=True) == 0
    pace.ticked(full=True)  # the tick's own turn took the first share
    clock.advance(0)
    assert turns == [True, True] and not pace.later  # 6 / 2 = 3 turns in all
    pace.ticked(full=False)
    clock.advance(0)
    assert len(turns) == 2


def test_a_turn_that_is_not_full_is_the_last() -> None:
    clock, turns = Clock(), []
    pace = DownPace(clock, lambda: turns.append(1) or False)
    pace.ticked(full=True)
    clock.advance(0)
    assert turns == [1]


def test_a_new_tick_or_a_stop_drops_what_an_earlier_tick_left() -> None:
    """A starved reactor may reach the next tick before the last one's turns: one tick's
    share at a time, never two chains of turns."""
    clock, turns = Clock(), []
    pace = DownPace(clock, lambda: turns.append(1) or True)
    pace.ticked(full=True)
    pace.ticked(full=True)
    clock.advance(0)
    assert turns == [1, 1]
    pace.ticked(full=True)
    pace.stop()
    clock.advance(0)
    assert turns == [1, 1] and not clock.getDelayedCalls()


def test_a_turn_that_fails_is_logged_and_ends_the_tick() -> None:
    clock, calls = Clock(), []

    def take() -> bool:
        calls.append(1)
        raise RuntimeError("boom")

    pace = DownPace(clock, take)
    pace.ticked(full=True)
    clock.advance(0)
    assert calls == [1] and not pace.later and not clock.getDelayedCalls()
