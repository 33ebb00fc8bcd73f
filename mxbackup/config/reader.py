"""The generic reader: it walks a frozen dataclass's fields, each of which carries its `Setting`.

A `Setting` (in the field's metadata, made by `setting`) holds what the hand-written reader used
to repeat: the field's one-line doc and how its YAML value is read; the field's default is the
dataclass default.  `read_section` opens a YAML mapping, refuses unknown keys, then reads each
field in declaration order (a field that ``needs`` a later one waits for it), applying the
default of a key left out, and builds the object.

A `Reader` carries the file name and collects every problem, so the operator sees them all at
once; a value reader returns a placeholder after reporting, and nothing read is returned to the
caller of `parse` unless the error list is empty.
"""

from __future__ import annotations

import dataclasses
import functools
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

MISSING: Any = object()
"""What `Map.get` returns for a key that is not there."""

_REQUIRED: Any = object()
_METADATA = "mxbackup.config"
_PLAIN_KEY = re.compile(r"[A-Za-z0-9_-]+")

Read = Callable[..., Any]
"""A value reader: ``(reader, value, path, **needs) -> value``; it reports its own problems."""


class ConfigError(Exception):
    """One or more configuration problems; ``errors`` holds one line each."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors))
        self.errors = errors


class Reader:
    """Collects problems, each as one line: ``<source>: <key path>: <reason>``."""

    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[str] = []
        self.warnings: list[str] = []

    def error(self, path: str, reason: str) -> None:
        self.errors.append(one_line(f"{self.source}: {path}: {reason}"))

    def warning(self, path: str, reason: str) -> None:
        self.warnings.append(one_line(f"{self.source}: {path}: {reason}"))


class Map:
    """A YAML mapping being read: unknown keys are reported once, on opening."""

    def __init__(self, reader: Reader, path: str, data: dict[str, object]) -> None:
        self.r = reader
        self.path = path
        self.data = data

    @classmethod
    def open(
        cls,
        r: Reader,
        value: object,
        path: str,
        known: tuple[str, ...],
        refused: Mapping[str, str] | None = None,
    ) -> Map | None:
        """Check ``value`` is a mapping with only ``known`` keys; None if not a mapping."""
        if not isinstance(value, dict):
            r.error(path or "(top level)", f"must be a mapping, got {show(value)}")
            return None
        data: dict[str, object] = {}
        for key, item in value.items():
            if isinstance(key, str) and key in known:
                data[key] = item
            elif refused and isinstance(key, str) and key in refused:
                r.error(join(path, key), refused[key])
            else:
                r.error(join(path, key), "unknown key")
        return cls(r, path, data)

    def at(self, key: str) -> str:
        return join(self.path, key)

    def has(self, key: str) -> bool:
        return key in self.data

    def get(self, key: str) -> object:
        return self.data.get(key, MISSING)

    def required(self, key: str) -> object:
        if key not in self.data:
            self.r.error(self.at(key), "required key is missing")
        return self.get(key)


# --- the field specs ------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    """How one dataclass field is read from YAML; its default is the field's default."""

    doc: str
    read: Read | None = None
    key: str = ""  # the YAML key, when it is not the field's name
    section: type | None = None  # a nested mapping read into this dataclass
    null: bool = False  # an explicit null means the default
    needs: tuple[str, ...] = ()  # fields read before this one, passed by name to derive or read
    # The default, computed from ``needs``; MISSING when the key is required after all.
    derive: Callable[..., Any] | None = None
    read_keys: Callable[[Reader, Map], Any] | None = None  # reads ``keys`` of the mapping itself
    keys: tuple[str, ...] = ()
    refused: tuple[tuple[str, str], ...] = ()  # keys refused with a reason of their own
    # No two items of a list share this value; the hand-written reader checked route domains
    # once the whole route was read and the others at once, and the order of errors is kept.
    unique: Literal["", "when_read", "after_item"] = ""

    def yaml_keys(self, name: str) -> tuple[str, ...]:
        if self.read_keys is not None:
            return self.keys
        return (self.key or name,)


def setting(
    doc: str,
    read: Read | None = None,
    *,
    default: Any = _REQUIRED,
    factory: Callable[[], Any] | None = None,
    key: str = "",
    section: type | None = None,
    null: bool = False,
    needs: tuple[str, ...] = (),
    derive: Callable[..., Any] | None = None,
    read_keys: Callable[[Reader, Map], Any] | None = None,
    keys: tuple[str, ...] = (),
    refused: tuple[tuple[str, str], ...] = (),
    unique: Literal["", "when_read", "after_item"] = "",
) -> Any:
    """A dataclass field read from the YAML key of its name (or ``key``); no default: required."""
    spec = Setting(doc, read, key, section, null, needs, derive, read_keys, keys, refused, unique)
    metadata = {_METADATA: spec}
    if factory is not None:
        return field(default_factory=factory, metadata=metadata)
    if default is _REQUIRED:
        return field(metadata=metadata)
    return field(default=default, metadata=metadata)


@functools.cache
def settings_of(cls: type) -> tuple[tuple[dataclasses.Field[Any], Setting], ...]:
    """The fields of ``cls`` read from YAML, in the order they are read."""
    pending = [
        (f, f.metadata[_METADATA]) for f in dataclasses.fields(cls) if _METADATA in f.metadata
    ]
    for f, s in pending:
        if [s.read, s.section, s.read_keys].count(None) != 2:
            raise TypeError(f"{cls.__name__}.{f.name}: give one of read, section or read_keys")
    ordered: list[tuple[dataclasses.Field[Any], Setting]] = []
    while pending:
        read = {f.name for f, _ in ordered}
        ready = next(i for i, (_, s) in enumerate(pending) if set(s.needs) <= read)
        ordered.append(pending.pop(ready))
    return tuple(ordered)


def default_of(f: dataclasses.Field[Any]) -> Any:
    """The dataclass default of a field, or `MISSING` for a required one."""
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return MISSING


class Items:
    """A value reader for a list whose items are read by ``element`` (a reader or a dataclass)."""

    def __init__(self, element: Read | type, what: str, empty: str = "") -> None:
        self.element = element
        self.what = what  # "must be <what>" when the value is not a list
        self.empty = empty  # the reason an empty list is refused; "" if it is not

    def __call__(self, r: Reader, value: object, path: str) -> tuple[Any, ...]:
        if not isinstance(value, list):
            r.error(path, f"must be {self.what}, got {show(value)}")
            return ()
        if not value and self.empty:
            r.error(path, self.empty)
        seen: dict[object, str] = {}
        found = []
        for i, item in enumerate(value):
            if isinstance(self.element, type):
                one = read_section(r, item, f"{path}[{i}]", self.element, seen=seen)
            else:
                one = self.element(r, item, f"{path}[{i}]")
            if one is not None:
                found.append(one)
        return tuple(found)


# --- the walker -----------------------------------------------------------------------------


def read_section(
    r: Reader,
    value: object,
    path: str,
    cls: type,
    base: object = None,
    seen: dict[object, str] | None = None,
    fixed: Mapping[str, object] | None = None,
) -> Any:
    """Read a mapping into ``cls``; keys left out take ``base``'s values, or the defaults.

    Returns ``base`` if ``value`` is not a mapping and None if a required key is missing (both
    reported).  ``seen`` holds the unique values of the list items read so far; ``fixed``, the
    fields that do not come from YAML.
    """
    specs = settings_of(cls)
    known = tuple(k for f, s in specs for k in s.yaml_keys(f.name))
    refused = {k: why for _, s in specs for k, why in s.refused}
    m = Map.open(r, value, path, known, refused)
    if m is None:
        return base
    done: dict[str, Any] = {}
    later: list[tuple[dict[object, str], str, object]] = []
    for f, s in specs:
        done[f.name] = _read_field(m, f, s, base, done)
        if s.unique and seen is not None:
            check = (seen, m.at(s.key or f.name), done[f.name])
            if s.unique == "after_item":
                later.append(check)
            else:
                _check_unique(r, *check)
    for check in later:
        _check_unique(r, *check)
    if any(v is MISSING for v in done.values()):
        return None
    return cls(**done, **(fixed or {}))


def _read_field(
    m: Map, f: dataclasses.Field[Any], s: Setting, base: object, done: Mapping[str, Any]
) -> Any:
    if s.read_keys is not None:
        return s.read_keys(m.r, m)
    key = s.key or f.name
    value = m.get(key)
    needs = {name: done[name] for name in s.needs}
    if value is MISSING or (value is None and s.null):
        if base is not None:
            return getattr(base, f.name)
        if s.derive is not None and MISSING not in needs.values():
            derived = s.derive(**needs)
            if derived is not MISSING:  # MISSING: the key is required after all
                return derived
        default = default_of(f)
        if default is MISSING:
            m.r.error(m.at(key), "required key is missing")
        return default
    if s.section is not None:
        default = default_of(f)
        start = None if default is MISSING else default
        return read_section(m.r, value, m.at(key), s.section, start)
    assert s.read is not None  # settings_of checked it
    return s.read(m.r, value, m.at(key), **needs)


def _check_unique(r: Reader, seen: dict[object, str], path: str, value: object) -> None:
    if value in seen:
        r.error(path, f"duplicate of {seen[value]} ({show(value)})")
    elif value and value is not MISSING:
        seen[value] = path


def walk_keys(cls: type, prefix: str = "") -> Iterator[tuple[str, dataclasses.Field[Any], Setting]]:
    """Every YAML key that ``cls`` reads, nested ones too: (key path, field, setting)."""
    for f, s in settings_of(cls):
        for key in s.yaml_keys(f.name):
            path = join(prefix, key)
            yield path, f, s
            if s.section is not None:
                yield from walk_keys(s.section, path)
            if isinstance(s.read, Items) and isinstance(s.read.element, type):
                yield from walk_keys(s.read.element, f"{path}[]")


# --- one-line messages ----------------------------------------------------------------------


def join(path: str, key: object) -> str:
    name = key if isinstance(key, str) and _PLAIN_KEY.fullmatch(key) else show(key)
    return f"{path}.{name}" if path else str(name)


def show(value: object) -> str:
    """A short, one-line description of any YAML value, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value) if value.bit_length() <= 64 else "a very large integer"
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, str):
        return repr(value) if len(value) <= 80 else repr(value[:80]) + "..."
    return kind(value)


def kind(value: object) -> str:
    """What sort of value this is, without showing it (for secrets and containers)."""
    kinds = {dict: "a mapping", list: "a list", str: "a string", bool: "true or false"}
    for cls, name in kinds.items():
        if isinstance(value, cls):
            return name
    if value is None:
        return "null"
    if isinstance(value, int | float):
        return "a number"
    return f"a value of type {type(value).__name__}"


def one_line(text: str) -> str:
    """Escape anything that could break the line (newlines, other control characters)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)
