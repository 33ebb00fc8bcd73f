"""MAIL-time check: room in the spool for the declared size plus the reserve."""

from __future__ import annotations

import errno

from helpers import Harness, base_config
from mxbackup import replies
from mxbackup.inbound.rcpt.decision import ACCEPT
from mxbackup.inbound.space import room_for


class Spool:
    def __init__(self, free: int | OSError) -> None:
        self.free = free
        self.asked: list[int] = []

    def free_space(self, at_least: int) -> int:
        self.asked.append(at_least)
        if isinstance(self.free, OSError):
            raise self.free
        return self.free


def server(tmp_path, reserve: int):
    return Harness(tmp_path, base_config(tmp_path, min_free_space=reserve)).config.server


def test_room_for_the_declared_size_and_the_reserve(tmp_path):
    cfg = server(tmp_path, 1000)
    spool = Spool(1500)
    assert room_for(spool, cfg, {"SIZE": "500"}) is ACCEPT
    assert room_for(spool, cfg, {}) is ACCEPT
    assert room_for(spool, cfg, {"SIZE": "501"}) == replies.INSUFFICIENT_SPACE
    assert spool.asked == [1500, 1000, 1501]


def test_failure_to_look_is_a_local_error(tmp_path):
    spool = Spool(OSError(errno.EIO, "I/O error"))
    assert room_for(spool, server(tmp_path, 0), {}) == replies.LOCAL_ERROR


def test_mail_is_answered_452_when_the_spool_is_full(tmp_path):
    h = Harness(tmp_path, base_config(tmp_path, min_free_space=10**18))
    c = h.connect()
    c.read()
    assert c.send(b"MAIL FROM:<s@sender.test>\r\n") == [str(replies.INSUFFICIENT_SPACE)]
    assert c.send(b"RCPT TO:<u@example.com>\r\n")[0].startswith("503")  # no transaction
