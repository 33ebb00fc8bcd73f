"""The outbound side's test world: a real spool on a Clock, a scripted next hop, and a fake
deliverer that follows the delivery contract (``mxbackup.wire.contract``) exactly: one result
per job, each firing once, ``done`` after all of them, and ``ready()`` waited on before
anything is "sent"; if it fails, nothing is sent and every job is a tempfail, not tried."""

from __future__ import annotations

import email
import random
from collections.abc import Callable

from twisted.internet import defer
from twisted.internet.task import Clock

from helpers import base_config, spool_files, sync_thread
from mxbackup import config as config_module
from mxbackup.outbound.admin import QueueAdmin
from mxbackup.outbound.nexthop import NoRoute, NotNow
from mxbackup.outbound.scheduler import Scheduler
from mxbackup.queue.envelope import Envelope, Recipient
from mxbackup.queue.spool import Spool
from mxbackup.wire.contract import Attempt, Candidate, Delivery, JobResult, Outcome, classify

MINUTE = 60.0
REMOTE = "primary.test[127.0.0.1]:25"


class FakeNextHop:
    def __init__(self) -> None:
        self.no_route: set[str] = set()  # domains that can never take mail
        self.no_address: set[str] = set()  # domains without a usable address
        self.not_now: dict[str, str] = {}  # domains with no next hop for now, and why

    def for_route(self, route):
        return self._answer(route.domain, [Candidate("primary.test", "127.0.0.1", route.port)])

    def for_domain(self, domain):
        return self._answer(domain, [Candidate(f"mx.{domain}", "127.0.0.2", 25)])

    def _answer(self, domain, candidates):
        if domain in self.not_now:
            return defer.fail(NotNow(self.not_now[domain]))
        if domain in self.no_route:
            return defer.fail(NoRoute(f"domain {domain} accepts no mail (null MX)"))
        return defer.succeed([] if domain in self.no_address else candidates)


class Session:
    """One connection's jobs, as the client would see them; a test holding it plays the
    client: ``finish`` ends one job's transaction, ``end`` the session."""

    def __init__(self, jobs, ready) -> None:
        self.jobs = list(jobs)
        self.ready = ready
        self.results = tuple(defer.Deferred() for _ in self.jobs)
        self.done: defer.Deferred = defer.Deferred()
        self.delivery = Delivery(self.results, self.done)

    def finish(
        self, i: int, outcome: Outcome | Callable[[str], Outcome], at_end: bool = False
    ) -> None:
        job = self.jobs[i]
        per_rcpt = outcome if callable(outcome) else (lambda rcpt: outcome)
        outcomes = {r: per_rcpt(r) for r in job.recipients}
        self.results[i].callback(JobResult(job, outcomes, at_end))

    def end(self, attempt: Attempt, rest: Outcome | None = None) -> None:
        """Every job not finished gets ``rest`` (default: not tried), then ``done`` fires."""
        rest = rest or Outcome("tempfail", 0, attempt.error or "session ended", tried=False)
        for i, d in enumerate(self.results):
            if not d.called:
                self.finish(i, rest, at_end=True)
        self.done.callback(attempt)


class FakeDeliver:
    """Scripted delivery: ``up`` decides whether the target answers; ``reply(rcpt)`` what
    it answers for each recipient; ``hold`` keeps sessions pending until released."""

    def __init__(self) -> None:
        self.calls: list[list] = []
        self.sent: list[bytes] = []
        self.up = True
        self.reply = lambda rcpt: (250, "2.0.0 Ok")
        self.hold = False
        self.pending: list[Session] = []
        self.settings: list = []
        # the connect-only check (``reach``): its calls, and whether the port takes
        # connections (None: when the target is ``up``); ``hold_checks`` keeps them pending
        self.checks: list[tuple] = []
        self.port_open: bool | None = None
        self.hold_checks = False
        self.pending_checks: list[defer.Deferred] = []
        self.down_reason = "connect: connection refused"  # the error while not ``up``

    def reach(self, candidates, timeout, source="") -> defer.Deferred:
        self.checks.append((list(candidates), timeout))
        if self.hold_checks:
            d: defer.Deferred = defer.Deferred()
            self.pending_checks.append(d)
            return d
        return defer.succeed(self.up if self.port_open is None else self.port_open)

    @property
    def probes(self) -> int:
        return sum(1 for jobs in self.calls if not jobs)

    @property
    def connections_with_mail(self) -> list[list]:
        return [jobs for jobs in self.calls if jobs]

    def __call__(self, candidates, settings, jobs, ready) -> Delivery:
        session = Session(jobs, ready)
        self.calls.append(session.jobs)
        self.settings.append(settings)
        if self.hold:
            self.pending.append(session)
        else:
            self._answer(session)
        return session.delivery

    def _answer(self, session: Session) -> None:
        if not self.up:
            why = self.down_reason
            session.end(Attempt(False, "", why), Outcome("tempfail", 0, why))
            return
        if not session.jobs:  # a probe: EHLO, QUIT
            session.done.callback(Attempt(True, REMOTE))
            return

        def send(_: object) -> None:
            for i, job in enumerate(session.jobs):  # the spool file goes once delivered
                with open(job.path, "rb") as f:
                    self.sent.append(f.read())
                session.finish(i, self._outcome)
            session.done.callback(Attempt(True, REMOTE))

        def not_ready(failure) -> None:
            why = f"local: {failure.getErrorMessage()}"
            session.end(Attempt(True, REMOTE), Outcome("tempfail", 0, why, REMOTE, tried=False))

        session.ready().addCallbacks(send, not_ready)

    def _outcome(self, rcpt: str) -> Outcome:
        code, text = self.reply(rcpt)
        return Outcome(classify(code), code, text, REMOTE)

    def release(self) -> None:
        pending, self.pending = self.pending, []
        for session in pending:
            self._answer(session)


class HeldRunner:
    """A spool runner whose rounds wait until released (``hold``), or fail (``fail``)."""

    def __init__(self) -> None:
        self.hold = False
        self.fail: OSError | None = None
        self.held: list = []

    def __call__(self, fn, *args) -> defer.Deferred:
        if self.fail is not None:
            error, self.fail = self.fail, None
            return defer.fail(error)
        if not self.hold:
            return sync_thread(fn, *args)
        d: defer.Deferred = defer.Deferred()
        self.held.append((d, fn, args))
        return d

    def release(self) -> None:
        self.hold = False
        while self.held:
            d, fn, args = self.held.pop(0)
            d.callback(fn(*args))


class World:
    def __init__(
        self, tmp, routes=None, delivery=None, runner=sync_thread, default_delivery=False
    ) -> None:
        data = base_config(tmp)
        data["routes"][0].update(routes or {})
        if not default_delivery:  # else no delivery section at all: every default
            data["delivery"] = {"probe_interval": 30, "tick": 1, **(delivery or {})}
        self.config = config_module.parse(data, "test.yaml")
        self.clock = Clock()
        self.clock.advance(1_800_000_000)
        self.spool = Spool(str(tmp / "spool"), runner, clock=self.clock.seconds)
        self.spool.recover()
        self.deliver = FakeDeliver()
        self.nexthop = FakeNextHop()
        self.scheduler = Scheduler(
            self.config,
            self.spool,
            self.clock,
            self.nexthop,
            self.deliver,
            check=self.deliver.reach,
            rng=random.Random(14),
        )
        self.admin = QueueAdmin(self.scheduler)
        self.scheduler.start()
        self.root = tmp / "spool"

    def queue(
        self, rcpts=("u@example.com",), sender="s@sender.test", body=b"", route="example.com"
    ) -> Envelope:
        inc = self.spool.incoming()
        inc.write(body or b"Subject: hello\r\nMessage-Id: <m@x>\r\n\r\nbody\r\n")
        env = Envelope(
            id=inc.id,
            sender=sender,
            recipients=[Recipient(r, route) for r in rcpts],
            received_at=self.clock.seconds(),
            size=inc.size,
        )
        self.spool.commit(inc, env)
        self.scheduler.wakeup(env)
        return env

    def advance(self, seconds: float, step: float = 1.0) -> None:
        for _ in range(int(seconds / step)):
            self.clock.advance(step)

    def dsns(self) -> list[email.message.Message]:
        """Every DSN made: still queued, or handed to a target already (each once)."""
        out, seen = [], set()
        queued = [(self.root / "new" / name).read_bytes() for name in spool_files(self.root, "new")]
        for raw in [*queued, *self.deliver.sent]:
            msg = email.message_from_bytes(raw)
            if msg.get_content_type() == "multipart/report" and raw not in seen:
                seen.add(raw)
                out.append(msg)
        return out
