"""Selectors of the administrator's queue commands."""

from __future__ import annotations

import pytest

from mxbackup.outbound.backlog import Backlog
from mxbackup.outbound.selection import Selector, parse_age
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
