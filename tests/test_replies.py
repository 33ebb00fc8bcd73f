"""Every reply: its enhanced status code (RFC 3463) agrees with its reply code."""

from __future__ import annotations

import re

import pytest

from mxbackup import replies


def test_every_reply_code_matches_its_enhanced_status():

    for reply in replies.ALL:
        if reply.status:
            assert reply.status[0] == str(reply.code)[0], reply
            assert re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", reply.status), reply
        else:
            assert reply.code in (220, 250, 334, 354), reply


def test_all_holds_every_reply_of_the_module():
    named = [v for v in vars(replies).values() if isinstance(v, replies.Reply)]
    assert len(replies.ALL) == len(named) > 50


@pytest.mark.parametrize("reply", replies.ALL, ids=str)
def test_enhanced_class_is_the_reply_class(reply):
    """RFC 3463 3.1: the class digit of the enhanced code is the first digit of the reply."""
    if reply.status:
        assert reply.status.split(".")[0] == str(reply.code)[0]


@pytest.mark.parametrize("reply", replies.ALL, ids=str)
def test_every_text_is_a_textstring(reply):
    assert re.fullmatch(r"[\t\x20-\x7e]+", reply.text), reply


def test_line_and_message_put_the_enhanced_code_first():
    assert replies.RELAY_DENIED.line() == b"550 5.7.1 Relay access denied: {}"
    assert replies.GREETING.format("mx").line() == b"220 mx ESMTP mxbackup"
    assert str(replies.CLOSING) == "221 2.0.0 Bye"


def test_format_makes_the_clients_text_printable():
    reply = replies.BAD_HELO.format("a\x1b[2J\r\nb\x00\x7fc")
    assert reply.text == "Syntax: a?[2J??b??c hostname"
    assert (reply.code, reply.status) == (501, "5.5.4")


def test_printable_keeps_tab_and_visible_ascii():
    assert replies.printable("a\tb ~") == "a\tb ~"
    assert replies.printable("j\u00fcrgen") == "j?rgen"
