"""Cutting the command stream into lines (pitfall 5)."""

from __future__ import annotations

from mxbackup.inbound.lines import LineReader


def test_lines_end_with_crlf_or_lf():
    reader = LineReader(512)
    assert reader.cut(b"NOOP\r\nQUIT\n") == (6, b"NOOP", False)
    assert reader.cut(b"QUIT\n") == (5, b"QUIT", False)
    assert reader.cut(b"\r\n") == (2, b"", False)


def test_incomplete_line_waits():
    assert LineReader(512).cut(b"NOO") == (0, None, False)


def test_limit_counts_the_line_ending():
    reader = LineReader(10)
    assert reader.cut(b"x" * 8 + b"\r\n") == (10, b"x" * 8, False)
    assert reader.cut(b"x" * 9 + b"\r\n") == (11, None, True)
    assert not reader.skipping  # the whole line was there: nothing more to skip


def test_over_long_line_without_end_is_dropped_and_skipped_to_its_end():
    reader = LineReader(10)
    assert reader.cut(b"x" * 10) == (10, None, True)
    assert reader.skipping
    assert reader.cut(b"yyyy") == (4, None, False)  # still the same line: thrown away
    assert reader.cut(b"zz\r\nNOOP\r\n") == (4, None, False)
    assert not reader.skipping
    assert reader.cut(b"NOOP\r\n") == (6, b"NOOP", False)


def test_limit_can_change_between_lines():
    reader = LineReader(10)
    reader.limit = 100
    assert reader.cut(b"q" * 50 + b"\r\n") == (52, b"q" * 50, False)
