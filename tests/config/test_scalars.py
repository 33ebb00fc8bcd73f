"""Tests for mxbackup.config.scalars: strings, numbers, booleans, choices and files."""

from __future__ import annotations

from pathlib import Path

import pytest

from mxbackup.config.reader import Reader, show
from mxbackup.config.scalars import (
    boolean,
    choice,
    integer,
    optional_file,
    read_text,
    readable_file,
    seconds,
    seconds_or_off,
    text,
)


def errors(read: object, value: object) -> list[str]:
    r = Reader("s.yaml")
    read(r, value, "k")  # type: ignore[operator]
    return r.errors


@pytest.mark.parametrize("value", [True, 1.0, "1", None, 0])
def test_integer_refuses_what_is_not_an_int(value: object) -> None:
    assert errors(integer(1, 9), value) == [
        f"s.yaml: k: must be an integer from 1 to 9, got {show(value)}"
    ]


def test_integer() -> None:
    assert integer(0)(Reader("s"), 10**30, "k") == 10**30
    assert errors(integer(0), -1) == ["s.yaml: k: must be an integer >= 0, got -1"]


@pytest.mark.parametrize("value", [0, -0.5, float("nan"), float("inf"), 10**400, False, "5"])
def test_bad_seconds(value: object) -> None:
    (line,) = errors(seconds, value)
    assert line.startswith("s.yaml: k: must be a number of seconds > 0, got ")


def test_seconds() -> None:
    assert seconds(Reader("s"), 3, "k") == 3.0
    assert isinstance(seconds(Reader("s"), 3, "k"), float)


def test_seconds_or_off() -> None:
    r = Reader("s")
    assert seconds_or_off(r, 0, "k") == 0.0
    assert seconds_or_off(r, 0.0, "k") == 0.0
    assert seconds_or_off(r, False, "k") == 0.0  # as the hand-written reader did (False == 0)
    assert seconds_or_off(r, 60, "k") == 60.0
    assert r.errors == []
    assert errors(seconds_or_off, -1) == ["s.yaml: k: must be a number of seconds > 0, got -1"]


@pytest.mark.parametrize("value", ["no", "yes", 1, 0, None, "true"])
def test_boolean_refuses_look_alikes(value: object) -> None:
    (line,) = errors(boolean, value)
    assert line.startswith("s.yaml: k: must be true or false, got ")


def test_choice_and_text() -> None:
    assert errors(choice("a", "b"), "A") == ["s.yaml: k: must be one of a | b, got 'A'"]
    assert errors(text, "  ") == ["s.yaml: k: must be a non-empty string, got '  '"]
    assert text(Reader("s"), "x", "k") == "x"


def test_files(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("content")
    r = Reader("s.yaml")
    assert readable_file(r, str(tmp_path / "f"), "k") == str(tmp_path / "f")
    assert read_text(r, "k", str(tmp_path / "f")) == "content"
    assert optional_file(r, str(tmp_path / "nope"), "k") == str(tmp_path / "nope")  # reported
    assert optional_file(r, "", "k") is None
    assert r.errors[0].startswith(f"s.yaml: k: cannot read '{tmp_path / 'nope'}': no such file")
    assert r.errors[1] == "s.yaml: k: must be a non-empty string, got ''"
    assert errors(readable_file, str(tmp_path)) == [
        f"s.yaml: k: '{tmp_path}' is not a regular file"
    ]
