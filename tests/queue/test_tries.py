"""The try log: appended before a delivery, read at start-up, rotated with what is in flight."""

from __future__ import annotations

import os

import pytest

from helpers import sample_envelope
from mxbackup.queue import tries
from mxbackup.queue.envelope import Envelope

T = 1_764_954_181.25


def nothing_in_flight() -> list[tries.Tried]:
    return []


def test_lines_appended_and_read_back_with_the_highest_count(tmp_path):
    log = tries.TryLog(str(tmp_path))
    log.note([("Q1", ((0, 1), (2, 1))), ("Q2", ())], nothing_in_flight, T)  # Q2: no try
    log.note([("Q1", ((0, 2),))], nothing_in_flight, T + 1)
    log.close()
    assert (tmp_path / tries.FILE).read_bytes() == (
        b"Q1 1764954181.250 0:1 2:1\nQ1 1764954182.250 0:2\n"
    )
    assert tries.read(str(tmp_path)) == {"Q1": {0: 2, 2: 1}}
    assert os.stat(tmp_path / tries.FILE).st_mode & 0o777 == 0o600


def test_no_log_or_one_that_cannot_be_read_reads_as_empty(tmp_path):
    assert tries.read(str(tmp_path)) == {}
    (tmp_path / tries.FILE).mkdir()  # EISDIR: the server must start all the same
    assert tries.read(str(tmp_path)) == {}


@pytest.mark.parametrize(
    "torn",
    [b"Q1 5 0:", b"Q1 5 0:1Q2 0:1", b"Q1 5", b"Q1 0:1", b"Q1 5 0:x", b"Q1 5 0:1:2",
     b"Q/1 5 0:1", b"Q1 5 -1:1", b"\xff 5 0:1", b"Q1 x 0:1"],
)  # fmt: skip
def test_lines_that_do_not_parse_are_skipped(torn):
    assert tries.parse(torn + b"\nQ3 7 1:2\n") == {"Q3": {1: 2}}


def test_rotation_keeps_the_previous_generation_and_what_is_in_flight(tmp_path):
    log = tries.TryLog(str(tmp_path), rotate_at=26)  # two lines
    log.note([("Q1", ((0, 1),))], nothing_in_flight, 5)
    log.note([("Q2", ((0, 1),))], lambda: [("Q2", ((0, 1),)), ("Q3", ())], 6)
    assert (tmp_path / tries.OLD).read_bytes() == b"Q1 5.000 0:1\nQ2 6.000 0:1\n"
    assert (tmp_path / tries.FILE).read_bytes() == b"Q2 6.000 0:1\n"
    log.note([("Q4", ((1, 3),))], lambda: [("Q4", ((1, 3),))], 7)  # 13 appended: no rotation
    assert (tmp_path / tries.OLD).read_bytes() == b"Q1 5.000 0:1\nQ2 6.000 0:1\n"
    log.note([("Q5", ((0, 1),))], lambda: [("Q5", ((0, 1),))], 8)  # 26 appended: rotates
    assert (tmp_path / tries.OLD).read_bytes() == b"Q2 6.000 0:1\nQ4 7.000 1:3\nQ5 8.000 0:1\n"
    log.note([("Q6", ((0, 1),))], lambda: [("Q6", ((0, 1),))], 9)
    log.close()
    assert tries.read(str(tmp_path)) == {
        "Q2": {0: 1}, "Q4": {1: 3}, "Q5": {0: 1}, "Q6": {0: 1}
    }  # fmt: skip


def test_what_is_carried_over_does_not_count_towards_the_next_rotation(tmp_path):
    log = tries.TryLog(str(tmp_path), rotate_at=20)
    many = [(f"Q{i}", ((0, 1),)) for i in range(10)]  # more than rotate_at by itself
    log.note([("A", ((0, 1),))], lambda: many, 1)
    log.note([("B", ((0, 1),))], lambda: many, 2)  # 20 and 11 appended: one rotation
    log.close()
    assert b"A 1.000" in (tmp_path / tries.OLD).read_bytes()


def test_while_a_big_queue_is_read_its_start_up_lines_outlive_rotations(tmp_path):
    """``queue.background``: the lines a crash left, for messages not read yet, stay until
    they are (two rotations would have dropped them: one retry more each), and the log still
    rotates (it grew without bound while a read kept failing).  A try in flight is written
    after them: a recipient's last line wins."""
    log = tries.TryLog(str(tmp_path), rotate_at=13)  # one line
    log.carried = {"C1": {0: 2, 1: 3}, "Q2": {0: 1}}
    for n in range(4):
        log.note([(f"Q{n}", ((0, 1),))], lambda: [("Q2", ((0, 2),))], n)
    log.close()
    assert b"Q0 0.000" not in (tmp_path / tries.OLD).read_bytes()  # rotated twice at least
    assert tries.read(str(tmp_path)) == {"C1": {0: 2, 1: 3}, "Q2": {0: 2}, "Q3": {0: 1}}
    log.carried = {}  # the load ended: the next rotations drop them
    for n in range(5, 7):
        log.note([(f"Q{n}", ((0, 1),))], lambda: [], n)
    log.close()
    assert "C1" not in tries.read(str(tmp_path))


def test_a_write_cut_short_starts_the_next_on_a_new_line(tmp_path, monkeypatch):
    log = tries.TryLog(str(tmp_path))
    real_write = os.write
    monkeypatch.setattr(tries.os, "write", lambda fd, data: real_write(fd, data[:4]))
    with pytest.raises(OSError, match="cut short"):
        log.note([("Q1", ((0, 1),))], nothing_in_flight, 5)
    monkeypatch.setattr(tries.os, "write", real_write)
    log.note([("Q2", ((0, 1),))], nothing_in_flight, 5)
    log.close()
    assert (tmp_path / tries.FILE).read_bytes() == b"Q1 5\nQ2 5.000 0:1\n"
    assert tries.read(str(tmp_path)) == {"Q2": {0: 1}}


def test_a_tail_a_crash_cut_short_is_not_joined_to_the_next_line(tmp_path):
    (tmp_path / tries.FILE).write_bytes(b"Q1 5.000 0:1\nE1 5.0")
    log = tries.TryLog(str(tmp_path))
    log.note([("Q2", ((0, 1),))], nothing_in_flight, 6)
    log.close()
    assert tries.read(str(tmp_path)) == {"Q1": {0: 1}, "Q2": {0: 1}}


def test_a_recipients_last_line_wins():
    """A try taken back (it never reached the target) is noted again with the lower count."""
    assert tries.parse(b"Q1 5 0:2 1:2\nQ1 6 0:1\n") == {"Q1": {0: 1, 1: 2}}


def test_replay_raises_the_counts_of_pending_recipients_only():
    env = sample_envelope("Q1")
    env.recipients[0].attempts = 3
    raw = env.to_json()
    assert tries.replay(raw, {0: 3, 1: 0}) is raw  # the outcomes were written: nothing to do
    replayed = Envelope.from_json(tries.replay(raw, {0: 4, 2: 1, 9: 1}))
    a, b, c, _ = replayed.recipients
    assert (a.attempts, a.inflight) == (4, True)
    assert (b.attempts, b.inflight) == (0, False)
    assert (c.state, c.attempts) == ("delivered", 0)  # done: the log changes nothing


def test_tried_names_the_recipients_in_flight():
    env = sample_envelope("Q1")
    env.recipients[1].attempts = 2
    env.recipients[1].inflight = True
    assert tries.tried(env) == ((1, 2), (3, 0))
