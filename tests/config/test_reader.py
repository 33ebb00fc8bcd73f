"""Tests for mxbackup.config.reader: the generic walker over a dataclass's settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest

from mxbackup.config.reader import (
    MISSING,
    Items,
    Map,
    Reader,
    join,
    read_section,
    setting,
    settings_of,
    show,
    walk_keys,
)
from mxbackup.config.scalars import boolean, integer, text


def number_after(r: Reader, value: object, path: str, first: int) -> int:
    return integer(first)(r, value, path)


def both(r: Reader, m: Map) -> str:
    if m.has("a") == m.has("b"):
        r.error(m.path, "give a or b")
        return ""
    return str(m.get("a") if m.has("a") else m.get("b"))


def above_one(first: int) -> bool:
    return first > 1


def flag_after(r: Reader, value: object, path: str, first: int) -> bool:
    return boolean(r, value, path)  # a reader gets its needs, derive or not


def required_unless_above_one(first: int) -> str:
    return "" if first > 1 else MISSING


@dataclass(frozen=True)
class Inner:
    on: bool = setting("a flag", boolean)
    count: int = setting("a count", integer(0), default=3)


@dataclass(frozen=True, kw_only=True)
class Outer:
    name: str = setting("a name", text, unique="when_read")
    second: int = setting("read after first, at least first", number_after, needs=("first",))
    first: int = setting("a number", integer(1), default=1)
    inner: Inner = setting("a section", section=Inner, default=Inner(on=True))
    maybe: Inner | None = setting("a section or null", section=Inner, default=None, null=True)
    flag: bool = setting(
        "derived from first", flag_after, default=False, needs=("first",), derive=above_one
    )
    either: str = setting("a or b", read_keys=both, keys=("a", "b"))
    tag: str = setting("unique after the item", text, key="label", default="", unique="after_item")
    secret: str = setting("never plain", text, default="", refused=(("plain", "use secret"),))


def read(value: object, cls: type = Outer, **kwargs: Any) -> tuple[Any, list[str]]:
    r = Reader("f.yaml")
    return read_section(r, value, "top", cls, **kwargs), r.errors


def test_read_order_follows_needs() -> None:
    names = [f.name for f, _ in settings_of(Outer)]
    assert names[:3] == ["name", "first", "second"]
    assert sorted(names) == sorted(
        ["name", "second", "first", "inner", "maybe", "flag", "either", "tag", "secret"]
    )
    _, errors = read({"name": "n", "second": 2, "first": 0, "a": "x"})
    assert errors == ["f.yaml: top.first: must be an integer >= 1, got 0"]
    _, errors = read({"name": "n", "second": 2, "first": 3, "a": "x"})
    assert errors == ["f.yaml: top.second: must be an integer >= 3, got 2"]


def test_defaults_null_and_derive() -> None:
    outer, errors = read({"name": "n", "second": 5, "first": 2, "a": "x", "maybe": None})
    assert errors == []
    assert outer == Outer(
        name="n", second=5, first=2, inner=Inner(True, 3), maybe=None, flag=True, either="x"
    )
    assert read({"name": "n", "second": 5, "a": "x", "flag": False})[0].flag is False


@dataclass(frozen=True, kw_only=True)
class Conditional:
    first: int = setting("a number", integer(1), default=1)
    host: str = setting(
        "required unless first > 1",
        lambda r, value, path, first: text(r, value, path),
        needs=("first",),
        derive=required_unless_above_one,
    )


def test_a_derive_that_gives_missing_makes_the_key_required() -> None:
    assert read({"first": 2}, Conditional) == (Conditional(first=2, host=""), [])
    assert read({}, Conditional) == (None, ["f.yaml: top.host: required key is missing"])
    assert read({"host": "h"}, Conditional) == (Conditional(first=1, host="h"), [])


def test_sections_in_part_keep_the_default_values() -> None:
    outer, errors = read({"name": "n", "second": 1, "b": "y", "inner": {"count": 0}})
    assert errors == []
    assert outer.inner == Inner(on=True, count=0)
    outer, errors = read({"name": "n", "second": 1, "b": "y", "maybe": {"on": False}})
    assert outer.maybe == Inner(on=False, count=3)
    assert read({"name": "n", "second": 1, "b": "y", "maybe": {}})[1] == [
        "f.yaml: top.maybe.on: required key is missing"
    ]


def test_missing_required_keys_are_reported_and_nothing_is_built() -> None:
    outer, errors = read({"first": 2})
    assert outer is None
    assert errors == [
        "f.yaml: top.name: required key is missing",
        "f.yaml: top.second: required key is missing",
        "f.yaml: top: give a or b",
    ]


def test_not_a_mapping_gives_the_base() -> None:
    assert read([1], base="base") == ("base", ["f.yaml: top: must be a mapping, got a list"])


def test_unknown_and_refused_keys_come_first_in_document_order() -> None:
    _, errors = read({"zz": 1, "name": 5, "plain": "x", 3: 4, "second": 1, "a": "x"})
    assert errors == [
        "f.yaml: top.zz: unknown key",
        "f.yaml: top.plain: use secret",
        "f.yaml: top.3: unknown key",
        "f.yaml: top.name: must be a non-empty string, got 5",
    ]


def test_unique_when_read_and_after_item() -> None:
    items = Items(Outer, "a list of outers")
    r = Reader("f.yaml")
    item = {"name": "n", "second": 0, "a": "x", "label": "t"}
    found = items(r, [item, item], "list")
    assert len(found) == 2
    assert r.errors == [
        "f.yaml: list[0].second: must be an integer >= 1, got 0",
        "f.yaml: list[1].name: duplicate of list[0].name ('n')",
        "f.yaml: list[1].second: must be an integer >= 1, got 0",
        "f.yaml: list[1].label: duplicate of list[0].label ('t')",
    ]


def test_empty_values_are_never_duplicates() -> None:
    r = Reader("f.yaml")
    item = {"name": "", "second": 1, "a": "x"}
    Items(Outer, "outers")(r, [item, item], "list")
    assert r.errors == [
        "f.yaml: list[0].name: must be a non-empty string, got ''",
        "f.yaml: list[1].name: must be a non-empty string, got ''",
    ]


def test_items() -> None:
    r = Reader("f.yaml")
    numbers = Items(integer(0), "a list of numbers", empty="needs a number")
    assert numbers(r, "1", "n") == ()
    assert numbers(r, [], "n") == ()
    assert numbers(r, [1, -1, 2], "n") == (1, 0, 2)  # the item reader's placeholder is kept
    assert r.errors == [
        "f.yaml: n: must be a list of numbers, got '1'",
        "f.yaml: n: needs a number",
        "f.yaml: n[1]: must be an integer >= 0, got -1",
    ]


def test_walk_keys() -> None:
    paths = [path for path, _, _ in walk_keys(Outer)]
    assert paths == [
        "name", "first", "second", "inner", "inner.on", "inner.count", "maybe", "maybe.on",
        "maybe.count", "flag", "a", "b", "label", "secret",
    ]  # fmt: skip


def test_map_helpers() -> None:
    r = Reader("f.yaml")
    m = Map.open(r, {"k": None}, "p", ("k", "l"))
    assert m is not None
    assert (m.at("k"), m.has("k"), m.get("k"), m.get("l")) == ("p.k", True, None, MISSING)
    assert m.required("l") is MISSING
    assert r.errors == ["f.yaml: p.l: required key is missing"]


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (None, "null"),
        (True, "true"),
        (7, "7"),
        (2**65, "a very large integer"),
        (1.5, "1.5"),
        ("x" * 81, repr("x" * 80) + "..."),
        ({}, "a mapping"),
        (b"x", "a value of type bytes"),
    ],
)
def test_show(value: object, shown: str) -> None:
    assert show(value) == shown


def test_join() -> None:
    assert join("", "a") == "a"
    assert join("a", "b-c_1") == "a.b-c_1"
    assert join("a", "two words") == "a.'two words'"
    assert join("a", None) == "a.null"


def test_a_setting_reads_in_exactly_one_way() -> None:
    @dataclass(frozen=True)
    class Neither:
        x: int = setting("no reader")

    @dataclass(frozen=True)
    class Both:
        x: Inner = setting("two readers", boolean, section=Inner)

    for cls in (Neither, Both):
        with pytest.raises(TypeError, match="give one of read, section or read_keys"):
            settings_of(cls)
