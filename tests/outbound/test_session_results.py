"""What a session's end does to the scheduler: results the end decided are recorded after the
target's health (as before the client's rewrite), and a local error in the client leaves the
target alone and tries the messages again in a minute."""

from __future__ import annotations

import dataclasses

from outbound_world import MINUTE, World
from twisted.logger import globalLogPublisher

from mxbackup.outbound.scheduler import APPLY_EVERY
from mxbackup.wire import client
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


def test_a_local_error_in_the_client_leaves_the_target_alone(tmp_path):
    """An unreadable ca_file: the client fails before connecting.  As when the old client
    raised: the target is not marked down, no outcome is recorded (last_reply untouched), the
    message is tried again in a minute."""
    w = World(tmp_path)
    real = w.scheduler.dialer.settings

    def missing_ca_file(route):
        return dataclasses.replace(
            real(route),
            security="starttls_required",
            verify_certificate=True,
            ca_file=str(tmp_path / "gone.pem"),
        )

    w.scheduler.dialer.settings = missing_ca_file
    w.scheduler.dialer.deliver = lambda c, s, j, r: client.deliver(None, c, s, j, r)
    events: list[dict] = []
    globalLogPublisher.addObserver(events.append)
    try:
        env = w.queue()
        w.advance(1)
    finally:
        globalLogPublisher.removeObserver(events.append)
    target = w.scheduler.targets["example.com"]
    rcpt = env.recipients[0]
    assert not target.down and target.last_error == ""
    assert (rcpt.state, rcpt.last_reply, rcpt.inflight) == ("pending", "", False)
    assert rcpt.attempts == 1  # counted, as before (begin)
    assert w.scheduler.stats.deferred == 0  # no outcome recorded
    lines = [e.get("log_format", "") for e in events]
    assert "delivery to {key} failed locally: {error}" in lines
    assert not any(line.startswith("delivery id=") for line in lines)
    assert not any("is down" in line for line in lines)
    w.advance(MINUTE - 2)
    assert rcpt.attempts == 1
    w.advance(2)
    assert rcpt.attempts == 2  # again a minute later
    assert not target.down
