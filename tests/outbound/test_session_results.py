"""What a session's end does to the scheduler: results the end decided are recorded after the
target's health (as before the client's rewrite)."""

from __future__ import annotations

from outbound_world import World

from mxbackup.outbound.scheduler import APPLY_EVERY
from mxbackup.wire.contract import Attempt

BROKEN = Attempt(True, "primary.test[127.0.0.1]:25", "mail: connection lost", broken=True)


def test_results_of_the_end_of_a_session_are_recorded_after_the_target_is_down(tmp_path):
    """A session that breaks with many messages left: the target is marked down first (its
    log line first), then every outcome is recorded, none in a batch before it."""
    w = World(tmp_path)
    w.deliver.hold = True
    n = APPLY_EVERY + 5
    for i in range(n):
        w.queue((f"u{i}@example.com",))
    w.clock.advance(1)
    session = w.deliver.pending.pop()
    assert len(session.jobs) == n
    target = w.scheduler.targets["example.com"]
    seen: list[bool] = []
    record = w.scheduler.recorder.record

    def watched(key, result):
        seen.append(target.down)
        return record(key, result)

    w.scheduler.recorder.record = watched
    session.end(BROKEN)
    assert seen == [True] * n
