"""Selectors of the administrator's queue commands."""

from __future__ import annotations

import pytest

from mxbackup.outbound.backlog import Backlog
from mxbackup.outbound.selection import Selector, SortedRuns, parse_age
from mxbackup.queue.envelope import Envelope, Recipient


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3600", 3600), ("90m", 5400), ("1h", 3600), ("2d", 172800), ("1W", 604800)],
)
def test_parse_age(text, seconds):
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "h", "-1h", "1y", "1 h x"])
def test_parse_age_refuses(text):
    with pytest.raises(ValueError, match="not an age"):
        parse_age(text)


def envelope(qid, sender, rcpts, received_at):
    return Envelope(qid, sender, [Recipient(a, r) for a, r in rcpts], received_at, 10)


QUEUE = {
    "A": envelope("A", "s@x.test", [("u@example.com", "example.com")], 1000),
    "B": envelope("B", "", [("s@x.test", None)], 2000),
    "C": envelope("C", "t@x.test", [("v@example.org", "example.org")], 3000),
}


@pytest.mark.parametrize(
    ("args", "chosen"),
    [
        ({"all": True}, ["A", "B", "C"]),
        ({"route": "example.com"}, ["A"]),
        ({"route": "mx:x.test"}, ["B"]),
        ({"sender": "<>"}, ["B"]),
        ({"sender": "<S@X.test>"}, ["A"]),
        ({"recipient": "V@example.org"}, ["C"]),
        ({"older_than": 1500}, ["A", "B"]),
        ({"all": True, "older_than": 2500}, ["A"]),
        ({"ids": ["C", "A"]}, ["C", "A"]),
        ({"ids": ["C", "A"], "route": "example.com"}, ["A"]),
        ({"id": "B"}, ["B"]),
        ({}, []),
    ],
)
def test_select(args, chosen):
    assert Selector.from_request(args).select(QUEUE, now=3500) == chosen
    # the same from the backlog's index, reading no envelope but for sender and recipient
    backlog = Backlog()
    for env in QUEUE.values():
        backlog.add(env, now=0.0)
    view = backlog.envelopes.view()
    read = []
    real_peek = backlog.envelopes.peek
    backlog.envelopes.peek = lambda qid: read.append(qid) or real_peek(qid)  # type: ignore[method-assign]
    assert Selector.from_request(args).select(view, 3500, backlog) == chosen
    if not ({"sender", "recipient", "ids", "id"} & set(args)):
        assert read == []


def test_unknown_id_and_bad_arguments():
    with pytest.raises(KeyError, match="no message X"):
        Selector.from_request({"ids": ["A", "X"]}).select(QUEUE, 0)
    with pytest.raises(ValueError, match="ids"):
        Selector.from_request({"ids": "A"})
    with pytest.raises(ValueError, match="older_than"):
        Selector.from_request({"older_than": "1h"})
    assert Selector.from_request({}).empty


@pytest.mark.parametrize(
    "args", [{"all": True}, {"older_than": 1500}, {"sender": "<>"}, {"route": "example.com"}]
)
@pytest.mark.parametrize("indexed", [False, True])
def test_steps_in_slices_choose_what_select_chooses(args, indexed):
    queue = {f"Q{i:03d}": envelope(f"Q{i:03d}", "", [("u@example.com", "example.com")], i)
             for i in (7, 3, 9, 1, 5, 2, 8)}  # fmt: skip
    backlog = None
    if indexed:
        backlog = Backlog()
        for env in queue.values():
            backlog.add(env, now=0.0)
    selector = Selector.from_request(args)
    steps = selector.steps(queue, 4, backlog, size=2)
    slices = 0
    while True:
        try:
            next(steps)
            slices += 1
        except StopIteration as end:
            runs = end.value
            break
    assert slices == 3  # 7 ids, 2 per slice: 4 slices, 3 pauses between them
    assert len(runs.runs) == 4 and all(run == sorted(run) for run in runs.runs)
    assert list(runs) == selector.select(queue, 4, backlog)
    assert list(runs.after("Q003")) == [q for q in selector.select(queue, 4) if q > "Q003"]


def test_a_message_gone_between_slices_is_left_out():
    queue = dict(QUEUE)
    steps = Selector(all=True, sender="s@x.test").steps(queue, 3500, size=1)
    next(steps)  # the first slice ("A") is chosen, then "A" goes
    del queue["A"], queue["C"]  # "C" is gone before its slice
    with pytest.raises(StopIteration) as end:
        while True:
            next(steps)
    assert list(end.value.value) == ["A"]


def test_indexed_steps_leave_out_a_message_gone_before_its_slice():
    backlog = Backlog()
    for env in QUEUE.values():
        backlog.add(env, now=0.0)
    view = backlog.envelopes.view()
    steps = Selector(all=True).steps(view, 3500, backlog, size=1)
    next(steps)
    backlog.envelopes.discard("C")  # delivered before its slice is read
    with pytest.raises(StopIteration) as end:
        while True:
            next(steps)
    assert list(end.value.value) == ["A", "B"]


def test_sorted_runs_merge_and_page():
    runs = SortedRuns((["A", "D", "F"], ["B", "C"], [], ["E"]))
    assert list(runs) == ["A", "B", "C", "D", "E", "F"] and len(runs) == 6
    assert list(runs.after("C")) == ["D", "E", "F"]
    assert list(runs.after("F")) == [] and list(SortedRuns()) == []
