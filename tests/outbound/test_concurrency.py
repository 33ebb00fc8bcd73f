"""Connections per target, AIMD: the pure rules, then the scheduler against a primary that
limits itself (421 at the greeting beyond N connections at once), on a Clock."""

from __future__ import annotations

from outbound_world import REMOTE, World

from mxbackup.outbound.concurrency import Concurrency, pushed_back
from mxbackup.wire.contract import Attempt, Job, JobResult, Outcome

GENTLER, OK, DOWN = True, False, False  # what observe() says: absorbed, or the usual rules

GOOD = Attempt(True, REMOTE)
BUSY = Attempt(False, "", "[127.0.0.1]:25: greeting: 421 4.7.0 too many connections")
REFUSED = Attempt(False, "", "[127.0.0.1]:25: connect: Connection refused")


def result(code: int, text: str) -> JobResult:
    job = Job("q", "s@x", ("r@x",), "/dev/null", 1)
    kind = "delivered" if code < 400 else "tempfail"
    return JobResult(job, {"r@x": Outcome(kind, code, text, REMOTE)})


def test_push_back_signals():
    for text in (
        "greeting: 421 4.7.0 too many connections",
        "mail: 421-4.3.2 busy",
        "rcpt: 452 4.3.1 insufficient system storage",
        "rcpt: 451 4.7.1 rate limited",
        "data: ConnectionLost: Connection to the other side was lost",
        "data: ConnectionResetError: Connection reset by peer",
        "mail: connection closed by the target",
    ):
        assert pushed_back(text), text
    for text in ("connect: Connection refused", "rcpt: 451 4.3.0 try later", "auth: 535 no"):
        assert not pushed_back(text), text


def test_halved_once_per_burst_floor_one_then_down_and_plus_one_per_success():
    c = Concurrency(hold=1.0)
    assert c.limit("t", proven=False, ceiling=20) == 1  # slow start
    assert c.limit("t", proven=True, ceiling=20) == 20
    assert c.observe("t", BUSY, (), active=20, ceiling=20, now=0.0) == GENTLER
    assert c.limit("t", True, 20) == 10
    # the rest of the same burst counts once
    assert c.observe("t", BUSY, (), active=19, ceiling=20, now=0.5) == GENTLER
    assert c.limit("t", True, 20) == 10
    # later push-backs halve again from what is in use
    assert c.observe("t", BUSY, (), active=6, ceiling=20, now=2.0) == GENTLER
    assert c.limit("t", True, 20) == 3
    assert c.observe("t", BUSY, (), active=3, ceiling=20, now=4.0) == GENTLER
    assert c.observe("t", BUSY, (), active=1, ceiling=20, now=6.0) == DOWN  # at the floor
    assert c.limit("t", True, 20) == 1
    assert c.observe("t", GOOD, (), active=1, ceiling=20, now=7.0) == OK
    assert c.limit("t", True, 20) == 2  # additive increase: one per round of the window
    for _ in range(2):
        c.observe("t", GOOD, (), active=1, ceiling=20, now=7.0)
    assert c.limit("t", True, 20) == 3
    for _ in range(300):
        c.observe("t", GOOD, (), active=1, ceiling=20, now=8.0)
    assert c.limit("t", True, 20) == 20 and c.window("t") is None  # the ceiling


def test_refused_connections_are_no_push_back():
    c = Concurrency()
    assert c.observe("t", REFUSED, (), active=5, ceiling=20, now=0.0) == DOWN
    assert c.limit("t", True, 20) == 20


def test_throttling_replies_in_a_session_that_worked():
    c = Concurrency()
    slow = [result(250, "2.0.0 ok"), result(452, "4.3.1 insufficient system storage")]
    assert c.observe("t", GOOD, slow, active=8, ceiling=20, now=0.0) == GENTLER
    assert c.limit("t", True, 20) == 4
    other = [result(451, "4.3.0 try later")]
    assert c.observe("t", GOOD, other, active=4, ceiling=20, now=5.0) == OK  # not a push-back
    assert c.limit("t", True, 20) == 4  # 4.25
    at_floor = Concurrency()
    at_floor.observe("t", BUSY, (), active=2, ceiling=20, now=0.0)
    assert at_floor.observe("t", GOOD, slow, active=1, ceiling=20, now=5.0) == OK  # not down


class LimitingDeliver:
    """A primary that takes ``n`` connections at once and answers 421 to the others; each
    session it takes lasts until the test releases it."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.open: list = []
        self.busy = 0
        self.delivered: list[str] = []
        self.most = 0

    def __call__(self, candidates, settings, jobs, ready):
        from outbound_world import Session

        session = Session(jobs, ready)
        if not jobs:
            session.done.callback(GOOD)
        elif len(self.open) >= self.n:
            self.busy += 1
            why = BUSY.error
            session.end(BUSY, Outcome("tempfail", 0, why))
        else:
            self.open.append(session)
            self.most = max(self.most, len(self.open))
        return session.delivery

    def release_all(self) -> None:
        sessions, self.open = self.open, []
        for session in sessions:
            session.ready().addCallback(lambda _, s=session: self._finish(s))

    def _finish(self, session) -> None:
        for i, job in enumerate(session.jobs):
            self.delivered.extend(job.recipients)
            session.finish(i, Outcome("delivered", 250, "2.0.0 ok", REMOTE))
        session.done.callback(GOOD)


def test_a_primary_that_limits_itself_is_drained_without_going_down(tmp_path):
    w = World(
        tmp_path,
        delivery={"max_connections_per_target": 20, "max_messages_per_connection": 5},
    )
    primary = LimitingDeliver(n=4)
    w.scheduler.dialer.deliver = primary
    w.scheduler.targets["example.com"] = w.scheduler.health.get("example.com")
    w.scheduler.health.get("example.com").proven = True
    for i in range(100):
        w.queue(rcpts=(f"u{i}@example.com",))
    for _ in range(100):
        w.clock.advance(0.5)
        primary.release_all()
        if len(primary.delivered) == 100:
            break
    assert sorted(primary.delivered) == sorted(f"u{i}@example.com" for i in range(100))
    assert not w.scheduler.health.is_down("example.com")  # never marked down
    assert w.scheduler.window.window("example.com") is not None  # it learned: below 20
    assert primary.busy < 30  # a few refused connections, not one per batch and tick
    assert w.scheduler.stats.bounced == 0
    assert w.deliver.probes == 0
