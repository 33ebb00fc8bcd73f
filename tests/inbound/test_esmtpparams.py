"""MAIL's and RCPT's ESMTP parameters: SIZE, BODY, AUTH, SMTPUTF8, RET, ENVID, NOTIFY, ORCPT
(RFC 1870, 6152, 4954, 6531, 3461, 6533), and the form the envelope keeps them in."""

from __future__ import annotations

import pytest

from mxbackup import replies
from mxbackup.inbound.esmtpparams import mail_params, rcpt_params


def refusal(params, max_size=100):
    return mail_params(params, max_size)[0]


def test_size_body_auth():
    assert refusal({"SIZE": "10", "BODY": "7bit", "AUTH": "<>"}) is None
    assert refusal({"SIZE": "101"}) == replies.SIZE_DECLARED_TOO_BIG.format(100)
    assert refusal({"SIZE": None}) == replies.BAD_PARAMETER.format("SIZE")
    assert refusal({"SIZE": "1" * 21}, 10**30) == replies.BAD_PARAMETER.format("SIZE")
    assert refusal({"BODY": "BINARYMIME"}) == replies.BAD_PARAMETER.format("BODY")
    assert refusal({"BODY": None}) == replies.BAD_PARAMETER.format("BODY")
    assert refusal({"FROB": "1"}) == replies.UNKNOWN_PARAMETER.format("FROB")


def test_smtputf8_takes_no_value():
    assert mail_params({"SMTPUTF8": None}, 100) == (None, {"SMTPUTF8": None})
    assert refusal({"SMTPUTF8": "yes"}) == replies.BAD_PARAMETER.format("SMTPUTF8")


def test_ret_is_kept_in_upper_case_and_envid_as_received():
    ok, params = mail_params({"RET": "hdrs", "ENVID": "QQ+2Bx+3D1", "BODY": "8bitmime"}, 100)
    assert ok is None
    assert params == {"RET": "HDRS", "ENVID": "QQ+2Bx+3D1", "BODY": "8bitmime"}
    assert mail_params({"RET": "Full"}, 100)[1] == {"RET": "FULL"}


@pytest.mark.parametrize(
    ("params", "reply"),
    [
        ({"RET": "BODY"}, replies.BAD_PARAMETER.format("RET")),
        ({"RET": None}, replies.BAD_PARAMETER.format("RET")),
        ({"ENVID": None}, replies.BAD_XTEXT.format("ENVID")),
        ({"ENVID": "a+2"}, replies.BAD_XTEXT.format("ENVID")),  # + needs two hex digits
        ({"ENVID": "a+2b"}, replies.BAD_XTEXT.format("ENVID")),  # upper-case hex only
        ({"ENVID": "a+"}, replies.BAD_XTEXT.format("ENVID")),
        ({"ENVID": "x" * 101}, replies.PARAMETER_TOO_LONG.format("ENVID", 100)),
    ],
)
def test_bad_dsn_mail_parameters_are_501(params, reply):
    assert refusal(params) == reply
    assert reply.code == 501 and reply.status == "5.5.4"


def test_envid_of_exactly_100_characters():
    assert refusal({"ENVID": "x" * 100}) is None


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        ("NEVER", "NEVER"),
        ("never", "NEVER"),
        ("SUCCESS", "SUCCESS"),
        ("delay,failure,success", "SUCCESS,FAILURE,DELAY"),
        ("DELAY,SUCCESS", "SUCCESS,DELAY"),
        ("Failure", "FAILURE"),
    ],
)
def test_notify_is_kept_in_canonical_form(value, kept):
    assert rcpt_params({"NOTIFY": value}, False) == (None, {"NOTIFY": kept})


@pytest.mark.parametrize(
    ("value", "reply"),
    [
        ("NEVER,SUCCESS", replies.NOTIFY_NEVER_COMBINED),
        ("DELAY,NEVER", replies.NOTIFY_NEVER_COMBINED),
        ("SUCCESS,SUCCESS", replies.BAD_PARAMETER.format("NOTIFY")),
        ("SUCCESS,", replies.BAD_PARAMETER.format("NOTIFY")),
        ("ALWAYS", replies.BAD_PARAMETER.format("NOTIFY")),
        (None, replies.BAD_PARAMETER.format("NOTIFY")),
    ],
)
def test_bad_notify_is_501(value, reply):
    assert rcpt_params({"NOTIFY": value}, False)[0] == reply


@pytest.mark.parametrize(
    ("value", "utf8"),
    [
        ("rfc822;u@example.com", False),
        ("RFC822;u+40x@example.com", False),
        ("x-unknown;anything", False),
        ("utf-8;j\\x{00FC}rgen@example.com", False),  # RFC 6533 utf-8-addr-xtext
        ("utf-8;j\u00fcrgen@example.com", True),  # utf-8-addr-unitext, with SMTPUTF8
        ("rfc822;" + "x" * 493, False),  # 500 characters
    ],
)
def test_orcpt_is_kept_exactly_as_received(value, utf8):
    assert rcpt_params({"ORCPT": value}, utf8) == (None, {"ORCPT": value})


@pytest.mark.parametrize(
    ("value", "reply"),
    [
        ("u@example.com", replies.BAD_PARAMETER.format("ORCPT")),  # no addr-type
        ("rfc.822;u@example.com", replies.BAD_PARAMETER.format("ORCPT")),  # "." is special
        (";u@example.com", replies.BAD_PARAMETER.format("ORCPT")),
        ("rfc822;", replies.BAD_XTEXT.format("ORCPT")),
        ("rfc822;u+4@example.com", replies.BAD_XTEXT.format("ORCPT")),
        ("rfc822;a;b+", replies.BAD_XTEXT.format("ORCPT")),
        ("utf-8;j\u00fcrgen@example.com", replies.BAD_XTEXT.format("ORCPT")),  # no SMTPUTF8
        ("rfc822;" + "x" * 494, replies.PARAMETER_TOO_LONG.format("ORCPT", 500)),
        (None, replies.BAD_PARAMETER.format("ORCPT")),
    ],
)
def test_bad_orcpt_is_501(value, reply):
    assert rcpt_params({"ORCPT": value}, False)[0] == reply


def test_unknown_rcpt_parameter_is_555():
    assert rcpt_params({"FOO": None}, False)[0] == replies.UNKNOWN_PARAMETER.format("FOO")
    ok = rcpt_params({"NOTIFY": "FAILURE", "ORCPT": "rfc822;u@x.test"}, False)
    assert ok == (None, {"NOTIFY": "FAILURE", "ORCPT": "rfc822;u@x.test"})
