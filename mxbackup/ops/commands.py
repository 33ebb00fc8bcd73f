"""What the control socket can do (``mxbackup queue ...``, ``pause``, ``status``...); each
command returns a JSON-able result or a Deferred of one.

Commands on messages take a selector (``mxbackup.outbound.selection``): ``id`` (one message:
its refusal is the command's), or ``ids``, ``all``, ``route``, ``sender``, ``recipient``,
``older_than`` (every message chosen; the answer counts what was done and lists refusals).
"""

from __future__ import annotations

import base64
import dataclasses
from collections.abc import Generator
from itertools import islice
from typing import Any

from twisted.internet import defer
from twisted.python.failure import Failure

from mxbackup.ops.status import View
from mxbackup.outbound.admin import QueueAdmin
from mxbackup.outbound.health import target_key
from mxbackup.outbound.scheduler import Scheduler
from mxbackup.outbound.selection import Selector, SortedRuns
from mxbackup.queue.envelope import Envelope
from mxbackup.queue.spool import Spool
from mxbackup.turns import in_turns

# A listing's next pages (``after``) reuse its sorted ids while they are this recent (seconds):
# sorting a million ids again for each page of 1000 would cost minutes in all.
LIST_SNAPSHOT_TTL = 600.0
PAGE_SLICE = 100  # messages described per turn of the reactor (~20 ms at a million queued)
MAX_ERRORS = 100  # refusals listed in one answer (the rest are counted)
LOADING = (
    "the queue is still being read ({} more messages); try again once 'mxbackup status' no "
    "longer says loading"
)
NO_SELECTOR = (
    "say which messages: IDs, ALL, --route, --sender, --recipient, --older-than, "
    "or - to read IDs from stdin"
)


def describe(envelope: Envelope, now: float, view: View | None = None) -> dict[str, Any]:
    return {
        "id": envelope.id,
        "age": round(now - envelope.received_at, 3),
        "received_at": envelope.received_at,
        "size": envelope.size,
        "sender": envelope.sender,
        "held": envelope.held,
        "client_ip": envelope.client_ip,
        "recipients": [
            {
                "address": r.address,
                "route": r.route,
                "target": target_key(r),
                "state": r.state,
                "attempts": r.attempts,
                "next_attempt": r.next_attempt or None,
                "last_reply": r.last_reply,
                **(view.recipient(envelope, r) if view is not None else {}),
            }
            for r in envelope.recipients
        ],
    }


class Commands:
    def __init__(self, scheduler: Scheduler, admin: QueueAdmin, spool: Spool, reload: Any) -> None:
        self.scheduler = scheduler
        self.admin = admin
        self.spool = spool
        self._reload = reload
        self.extra: dict[str, Any] = {}  # commands other modules register (ops/verifycmd.py)
        # The sorted ids of the last whole-queue listing, for its next pages (``after``).
        self._listing: tuple[float, SortedRuns] = (-LIST_SNAPSHOT_TTL, SortedRuns())

    # -- looking -------------------------------------------------------------------------------
    def list(
        self, limit: int | None = None, after: str | None = None, **selector: Any
    ) -> defer.Deferred:
        """Fires with the chosen messages in queue-id (arrival) order; a page of at most
        ``limit`` with ids after ``after`` (the previous page's last id) when those are given.
        A big queue's ids are chosen and sorted in slices, one per turn of the reactor
        (``Selector.steps``), and a page merges only its own length of them: listing a
        million does not stall acceptance."""
        chosen = Selector.from_request(selector)
        after = None if after is None else str(after)  # a raw JSON request may send a number
        clock = self.scheduler.clock
        now = clock.seconds()
        if chosen.empty and after is not None and 0 <= now - self._listing[0] < LIST_SNAPSHOT_TTL:
            return in_turns(clock, self._page(self._listing[1], limit, after))  # its next page
        queue = self.scheduler.queue.view()  # read without unpacking the packed for good
        whole = chosen.empty
        if whole:
            chosen = Selector(all=True)
        d = in_turns(clock, chosen.steps(queue, now, self.scheduler.backlog))

        def listed(ids: SortedRuns) -> defer.Deferred:
            if whole:
                self._listing = (now, ids)
            return in_turns(clock, self._page(ids, limit, after))

        return d.addCallback(listed)

    def _page(
        self, ids: SortedRuns, limit: int | None, after: str | None
    ) -> Generator[None, None, list[dict[str, Any]]]:
        """The page's messages described, ``PAGE_SLICE`` per step (``in_turns``)."""
        view = View(self.scheduler)
        queue = self.scheduler.queue.view()
        envelopes = (queue.get(qid) for qid in ids.after(after))  # gone since: skipped
        found = filter(None, envelopes)
        page: list[dict[str, Any]] = []
        for envelope in found if limit is None else islice(found, max(0, int(limit))):
            page.append(describe(envelope, view.now, view))
            if len(page) % PAGE_SLICE == 0:
                yield
        return page

    def loading(self) -> dict[str, Any] | None:
        """How far a big queue's load in the background is (``queue.background``); None:
        every queued message is read (what a listing shows is the whole queue)."""
        return self.scheduler.load_progress()

    def count(self) -> int:
        """Messages in the queue: O(1) (``stats`` also finds the oldest, looking at all)."""
        return len(self.scheduler.queue)

    def show(self, id: str, body: bool = False) -> dict[str, Any]:
        envelope = self._envelope(id)
        info = describe(envelope, self.scheduler.clock.seconds(), View(self.scheduler))
        info["params"] = envelope.params
        if body:  # the stored message as it is (postcat -q): bytes, so base64
            info["message"] = base64.b64encode(self.spool.read_message(id)).decode()
            return info
        head = self.spool.read_message(id, 256 * 1024)
        end = head.find(b"\r\n\r\n")
        info["headers"] = head[: end if end >= 0 else len(head)].decode("utf-8", "replace")
        return info

    def status(self) -> defer.Deferred:
        """Fires with ``View.status``, a big queue scanned in turns of the reactor."""
        return in_turns(self.scheduler.clock, View(self.scheduler).status_steps())

    def summary(self) -> defer.Deferred:
        """Fires with the queue's shape (``View.summary``), counted in turns of the reactor."""
        return in_turns(self.scheduler.clock, View(self.scheduler).summary_steps())

    def stats(self) -> defer.Deferred:
        """Fires with the counters and the queue's shape (its oldest found in turns)."""
        return in_turns(self.scheduler.clock, self._stats_steps())

    def _stats_steps(self) -> Generator[None, None, dict[str, Any]]:
        oldest_age = yield from self.scheduler.oldest_age_steps()
        s = self.scheduler.stats
        return {
            "accepted": s.accepted,
            "refused": dict(s.refused),
            "delivered": s.delivered,
            "deferred": s.deferred,
            "bounced": s.bounced,
            "dsn_sent": s.dsn_sent,
            "queue": len(self.scheduler.queue),
            "depth_by_target": self.scheduler.depth_by_target(),
            "oldest_age": oldest_age,
        }

    # -- acting on messages --------------------------------------------------------------------
    def flush(self, id: str | None = None, route: str | None = None, **more: Any) -> Any:
        """Try now (postqueue -f / -i / -s): nothing named = the whole queue."""
        if id and not route and not more:
            self._envelope(id)
            self.admin.flush_message(id)
            return {"flushed": 1}
        selector = Selector.from_request({"id": id, "route": route, **more})
        only_targets = (selector.sender, selector.recipient, selector.older_than) == (None,) * 3
        if not selector.ids and only_targets:
            return {"flushed": self._flush_targets(route)}  # whole targets: the fast way
        return self._each(selector, self.admin.flush_message, "flushed", skip_held=True)

    def _flush_targets(self, route: str | None) -> int:
        if not route:
            return self.scheduler.flush()
        keys = self._keys(route)
        return sum(self.scheduler.flush(k) for k in keys)

    def hold(self, **selector: Any) -> Any:
        return self._one_or_each(selector, self.admin.hold, "held")

    def release(self, **selector: Any) -> Any:
        return self._one_or_each(selector, self.admin.release, "released")

    def delete(self, **selector: Any) -> Any:
        return self._one_or_each(selector, self.admin.delete, "deleted")

    def bounce(self, **selector: Any) -> Any:
        return self._one_or_each(selector, self.admin.bounce_now, "bounced")

    def _one_or_each(self, args: dict[str, Any], action: Any, done: str) -> Any:
        loading = self.scheduler.load_progress()
        left = loading["of"] - loading["loaded"] if loading else 0
        if set(args) == {"id"} and args["id"]:  # one message: its refusal is the answer
            qid = args["id"]
            d = defer.maybeDeferred(action, qid)

            def not_read_yet(failure: Failure) -> None:
                failure.trap(KeyError)
                raise KeyError(f"no message {qid} read yet: {LOADING.format(left)}")

            return d.addErrback(not_read_yet) if left else d
        selector = Selector.from_request(args)
        if selector.empty:
            raise ValueError(NO_SELECTOR)
        if left:  # a hold or delete that misses what is not read yet would mislead
            raise ValueError(f"refused: {LOADING.format(left)}")
        return self._each(selector, action, done)

    @defer.inlineCallbacks
    def _each(self, selector: Selector, action: Any, done: str, skip_held: bool = False) -> Any:
        """``action`` on every message chosen, one after the other (a bulk delete of a
        million is a million spool operations: in order, not all queued at once)."""
        if selector.route is not None:  # an unknown route is an error, not "0 messages"
            selector = dataclasses.replace(selector, route=self._keys(selector.route)[0])
        now, backlog = self.scheduler.clock.seconds(), self.scheduler.backlog
        steps = selector.steps(self.scheduler.queue.view(), now, backlog)
        chosen = yield in_turns(self.scheduler.clock, steps)
        count, errors, skipped = 0, [], 0
        for qid in chosen:
            if qid not in self.scheduler.queue:
                continue  # gone meanwhile (delivered, or a DSN of an earlier one)
            if skip_held and self.scheduler.backlog.is_held(qid):
                skipped += 1
                continue
            try:
                yield defer.maybeDeferred(action, qid)
                count += 1
            except (KeyError, ValueError, OSError) as e:
                errors.append({"id": qid, "error": str(e.args[0] if e.args else e)})
        return {
            done: count,
            "matched": len(chosen),
            "held_skipped": skipped,
            "errors": errors[:MAX_ERRORS],
            "error_count": len(errors),
        }

    # -- delivery as a whole -------------------------------------------------------------------
    def pause(self, route: str | None = None) -> dict[str, Any]:
        self.scheduler.pause(self._key(route))
        return self.scheduler.pauses.state()

    def resume(self, route: str | None = None) -> dict[str, Any]:
        self.scheduler.resume(self._key(route))
        return self.scheduler.pauses.state()

    def reload(self) -> Any:
        return self._reload()

    # -- helpers -------------------------------------------------------------------------------
    def _key(self, route: str | None) -> str | None:
        if not route:
            return None
        (key,) = self._keys(route)[:1] or [None]
        if key is None:
            raise KeyError(f"no route for {route}")
        return key

    def _keys(self, route: str) -> list[str]:
        """The targets ``route`` names: a route's domain pattern (as written in the
        configuration), a domain a route matches, or a target with mail (``mx:domain``)."""
        name = route.lower().rstrip(".")
        if any(r.domain == name for r in self.scheduler.config.routes):
            return [name]
        if name in self.scheduler.backlog.keys():
            return [name]
        keys = self.scheduler.keys_for_domain(name)
        if not keys:
            raise KeyError(f"no route for {route}")
        return keys

    def _envelope(self, id: str) -> Envelope:
        """The message's envelope, to read."""
        envelope = self.scheduler.queue.peek(id)
        if envelope is None:
            raise KeyError(f"no message {id} in the queue")
        return envelope
