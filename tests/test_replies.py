"""Every reply: its enhanced status code (RFC 3463) agrees with its reply code."""

from __future__ import annotations

import re

from mxbackup import replies


def test_every_reply_code_matches_its_enhanced_status():

    for reply in replies.ALL:
        if reply.status:
            assert reply.status[0] == str(reply.code)[0], reply
            assert re.fullmatch(r"[245]\.\d{1,3}\.\d{1,3}", reply.status), reply
        else:
            assert reply.code in (220, 250, 334, 354), reply
