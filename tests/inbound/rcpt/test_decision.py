"""The chain's vocabulary: a candidate's outcome; acting on a value or a Deferred alike."""

from __future__ import annotations

from rcpt_case import candidate
from twisted.internet import defer

from mxbackup import replies
from mxbackup.inbound.rcpt.decision import ACCEPT, Postpone, when_decided
from mxbackup.queue.envelope import Recipient


def test_accepted_candidate_becomes_the_queues_recipient_with_its_route():
    assert candidate("alice@Sub.Example.org").outcome(ACCEPT) == Recipient(
        "alice@sub.example.org", "*.example.org"
    )
    assert candidate("x@elsewhere.test").outcome(ACCEPT) == Recipient("x@elsewhere.test", None)


def test_refusals_pass_through_unchanged():
    later = Postpone(replies.TOO_MANY_RECIPIENTS)
    assert candidate("u@example.com").outcome(later) is later
    assert candidate("u@example.com").outcome(replies.UNKNOWN_USER) is replies.UNKNOWN_USER


def test_when_decided_acts_now_on_a_value():
    seen = []
    assert when_decided(ACCEPT, lambda value, tag: seen.append((value, tag)), "t") is None
    assert seen == [(ACCEPT, "t")]


def test_when_decided_returns_the_deferred_and_acts_when_it_fires():
    seen = []
    d: defer.Deferred = defer.Deferred()
    result = when_decided(d, lambda value, tag: seen.append((value, tag)), "t")
    assert result is d and seen == []
    d.callback(replies.UNKNOWN_USER)
    assert seen == [(replies.UNKNOWN_USER, "t")]
