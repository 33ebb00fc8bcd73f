"""NOTIFY, RET, ENVID and ORCPT when the duty to notify is ours (RFC 3461), and SMTPUTF8 DSNs
(RFC 6533): the scheduler, the recorder and the DSN queue together, on a Clock."""

from __future__ import annotations

import email
import email.policy

from outbound_world import REMOTE, World

from helpers import spool_files
from mxbackup.outbound import dsnpolicy
from mxbackup.queue.envelope import Recipient
from mxbackup.wire.contract import Outcome, classify

HOUR = 3600.0


def queue(world, notify=None, ret=None, sender="s@sender.test", rcpt="u@example.com", **more):
    env = world.queue(rcpts=(rcpt,), sender=sender)
    if notify:
        env.recipients[0].params["NOTIFY"] = notify
    if ret:
        env.params["RET"] = ret
    env.params.update(more)
    return env


def answer(world, code, text, passed=False):
    world.deliver.reply = lambda rcpt: (code, text)
    world.deliver._outcome = lambda rcpt: Outcome(
        classify(code), code, text, REMOTE, notify_passed=passed
    )


def statuses(world):
    return [
        (
            d.get_payload()[1].get_payload()[1]["Action"],
            d.get_payload()[1].get_payload()[1]["Status"],
        )
        for d in world.dsns()
    ]


def test_notify_success_earns_a_relayed_dsn_from_a_target_without_dsn(tmp_path):
    world = World(tmp_path)
    queue(world, notify="SUCCESS", ENVID="env+2B1")
    world.advance(2)
    assert statuses(world) == [("relayed", "2.0.0")]
    per_message = world.dsns()[0].get_payload()[1].get_payload()[0]
    assert per_message["Original-Envelope-Id"] == "env+1"  # xtext-decoded (RFC 3464 2.2.1)


def test_no_success_dsn_when_the_target_took_the_duty(tmp_path):
    world = World(tmp_path)
    answer(world, 250, "2.0.0 ok", passed=True)
    queue(world, notify="SUCCESS,FAILURE")
    world.advance(2)
    assert world.dsns() == []


def test_no_success_dsn_without_notify_success(tmp_path):
    world = World(tmp_path)
    queue(world)
    world.advance(2)
    assert world.dsns() == []


def test_notify_never_means_no_bounce(tmp_path):
    world = World(tmp_path)
    answer(world, 550, "5.1.1 no such user")
    queue(world, notify="NEVER")
    world.advance(2)
    assert world.dsns() == []
    assert not world.scheduler.queue  # failed and gone all the same


def test_notify_without_failure_means_no_bounce(tmp_path):
    world = World(tmp_path)
    answer(world, 550, "5.1.1 no such user")
    queue(world, notify="SUCCESS,DELAY")
    world.advance(2)
    assert world.dsns() == []


def test_failure_bounce_is_ours_even_when_the_target_offers_dsn(tmp_path):
    world = World(tmp_path)
    answer(world, 550, "5.1.1 no such user", passed=True)
    env = queue(world, notify="FAILURE")
    env.recipients[0].params["ORCPT"] = "rfc822;U+40example.com"
    world.advance(2)
    assert statuses(world) == [("failed", "5.1.1")]
    block = world.dsns()[0].get_payload()[1].get_payload()[1]
    assert block["Original-Recipient"] == "rfc822;U@example.com"


def test_delay_notice_only_for_delay_or_no_notify(tmp_path):
    for notify, expected in ((None, 1), ("DELAY", 1), ("FAILURE", 0), ("NEVER", 0)):
        world = World(tmp_path / str(notify), delivery={"delay_warning": 3600})
        answer(world, 451, "4.3.0 busy")
        queue(world, notify=notify)
        world.advance(2 * HOUR, step=60)
        delayed = [s for s in statuses(world) if s[0] == "delayed"]
        assert len(delayed) == expected, notify


def test_ret_hdrs_returns_headers_and_ret_full_the_message(tmp_path):
    for ret, kind in (
        ("HDRS", "text/rfc822-headers"),
        ("FULL", "message/rfc822"),
        (None, "text/rfc822-headers"),
    ):
        world = World(tmp_path / str(ret))
        answer(world, 550, "5.1.1 no such user")
        queue(world, ret=ret)
        world.advance(2)
        (dsn,) = world.dsns()
        returned = dsn.get_payload()[2]
        assert returned.get_content_type() == kind, ret
        if ret == "FULL":
            assert b"body" in returned.as_bytes()


def test_utf8_refusal_makes_one_smtputf8_dsn(tmp_path):
    world = World(tmp_path)
    answer(world, 550, "5.6.7 SMTPUTF8 is required, but was not offered by host x")
    env = queue(world, sender="j\u00f6rg@sender.test", SMTPUTF8=None)
    world.advance(2)
    raw = [r for r in world.deliver.sent if b"report-type" in r] or [
        (world.root / "new" / n).read_bytes() for n in spool_files(world.root, "new")
    ]
    (data,) = raw
    msg = email.message_from_bytes(data, policy=email.policy.SMTPUTF8)
    assert msg.get_payload()[1].get_content_type() == "message/global-delivery-status"
    assert msg.get_payload()[2].get_content_type() == "message/global-headers"
    assert b"Final-Recipient: rfc822; s@sender.test" not in data
    assert b"Status: 5.6.7\r\n" in data
    assert "To: j\u00f6rg@sender.test\r\n".encode() in data  # RFC 6532: UTF-8 header
    dsn_jobs = [job for jobs in world.deliver.calls for job in jobs if job.sender == ""]
    assert len(dsn_jobs) == 1 and dsn_jobs[0].smtputf8  # queued with the SMTPUTF8 flag
    assert dsn_jobs[0].recipients == ("j\u00f6rg@sender.test",)
    assert env.id not in world.scheduler.queue


def test_wants():
    r = Recipient("u@x", None, params={"NOTIFY": "SUCCESS,DELAY"})
    assert dsnpolicy.wants(r, "relayed") and dsnpolicy.wants(r, "delayed")
    assert not dsnpolicy.wants(r, "failed")
    assert dsnpolicy.wants(Recipient("u@x", None), "failed")
    assert not dsnpolicy.wants(Recipient("u@x", None), "relayed")
