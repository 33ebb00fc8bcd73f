"""The chain: links in order, the first that does not accept decides; synchronous links cost
no Deferred, asynchronous ones are waited for; built from the configuration."""

from __future__ import annotations

from rcpt_case import CONFIG, ROUTES, candidate, config, transaction
from twisted.internet import defer

from mxbackup import replies
from mxbackup.inbound.access import AccessMatrix
from mxbackup.inbound.rcpt.addresslist import AddressListLink
from mxbackup.inbound.rcpt.chain import Chain, build_chain
from mxbackup.inbound.rcpt.decision import ACCEPT, Postpone
from mxbackup.inbound.rcpt.limit import RecipientLimit
from mxbackup.inbound.rcpt.quota import QuotaLink
from mxbackup.inbound.rcpt.relay import RelayRules
from mxbackup.inbound.rcpt.routing import RoutingInAddress
from mxbackup.inbound.rcpt.targetup import TargetUpLink


class Fixed:
    def __init__(self, answer, calls: list) -> None:
        self.answer = answer
        self.calls = calls

    def decide(self, transaction, recipient):
        self.calls.append(self)
        return self.answer


def test_all_accept():
    calls: list = []
    links = [Fixed(ACCEPT, calls), Fixed(ACCEPT, calls)]
    assert Chain(links).decide(transaction(), candidate("u@example.com")) is ACCEPT
    assert calls == links


def test_first_refusal_decides_and_later_links_are_not_asked():
    calls: list = []
    first, second = Fixed(replies.UNKNOWN_USER, calls), Fixed(ACCEPT, calls)
    assert Chain([first, second]).decide(transaction(), candidate("u@example.com")) == (
        replies.UNKNOWN_USER
    )
    assert calls == [first]


def test_an_asynchronous_link_is_waited_for_then_the_rest_run():
    calls: list = []
    pending: defer.Deferred = defer.Deferred()
    later = Fixed(Postpone(replies.TOO_MANY_RECIPIENTS), calls)
    chain = Chain([Fixed(ACCEPT, calls), Fixed(pending, calls), later])
    result = chain.decide(transaction(), candidate("u@example.com"))
    assert isinstance(result, defer.Deferred) and later not in calls
    got: list = []
    result.addCallback(got.append)
    pending.callback(ACCEPT)
    assert got == [Postpone(replies.TOO_MANY_RECIPIENTS)] and later in calls


def test_an_asynchronous_refusal_stops_the_chain():
    calls: list = []
    last = Fixed(ACCEPT, calls)
    chain = Chain([Fixed(defer.succeed(replies.RELAY_DENIED), calls), last])
    got: list = []
    chain.decide(transaction(), candidate("u@example.com")).addCallback(got.append)
    assert got == [replies.RELAY_DENIED] and last not in calls


def test_chains_nest():
    calls: list = []
    inner = Chain([Fixed(ACCEPT, calls)])
    assert Chain([inner, Fixed(ACCEPT, calls)]).decide(transaction(), candidate("u@x.test")) is (
        ACCEPT
    )


def test_built_in_todays_order():
    chain = build_chain(CONFIG, ROUTES, AccessMatrix(CONFIG.ip_ranges))
    kinds = [type(link) for link in chain.links]
    assert kinds == [
        RoutingInAddress,
        RecipientLimit,
        RelayRules,
        AddressListLink,
        TargetUpLink,
        QuotaLink,
    ]


def test_verification_sits_between_target_up_and_quota():
    from mxbackup.inbound.rcpt.services import RcptServices

    marker = object()
    chain = build_chain(
        CONFIG, ROUTES, AccessMatrix(CONFIG.ip_ranges), RcptServices(verification=marker)
    )
    kinds = [type(link) for link in chain.links]
    assert chain.links[5] is marker and kinds[4] is TargetUpLink and kinds[6] is QuotaLink


def test_built_from_the_configuration():
    cfg = config(max_recipients=7)
    chain = build_chain(cfg, ROUTES, AccessMatrix(cfg.ip_ranges))
    assert chain.links[1].max_recipients == 7


def test_whole_chain_on_typical_recipients():
    chain = build_chain(CONFIG, ROUTES, AccessMatrix(CONFIG.ip_ranges))
    internet = transaction("192.0.2.1")
    assert chain.decide(internet, candidate("u@example.com")) is ACCEPT
    assert chain.decide(internet, candidate("alice@sub.example.org")) is ACCEPT
    assert chain.decide(internet, candidate("carol@sub.example.org")).status == "5.1.1"
    assert chain.decide(internet, candidate("x@elsewhere.test")) == replies.RELAY_DENIED.format(
        "elsewhere.test"
    )
    # routing first: refused even from the loopback range, which may relay
    trusted = transaction("127.0.0.1")
    assert chain.decide(trusted, candidate("x@elsewhere.test")) is ACCEPT
    assert chain.decide(trusted, candidate("u%x@example.com")).status == "5.7.1"
