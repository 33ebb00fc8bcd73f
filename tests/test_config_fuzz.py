"""Property tests: no input makes the config loader fail other than with one-line ConfigErrors."""

from __future__ import annotations

import copy
import os
import tempfile
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mxbackup.config import Config, ConfigError, load, parse

EXAMPLE = Path(__file__).resolve().parent.parent / "etc" / "mx.yaml"
EXAMPLE_DATA = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
SOURCE = "fuzz.yaml"
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Strings the loader gives meaning to, so that random documents get past the first checks.
MEANINGFUL = [
    "all", "local", "external", "none", "ssl", "starttls", "starttls_required",
    "tcp:25", "example.com", "*.example.org", "bücher.example", "127.0.0.1", "::1",
    "[::1]:25", "host:25", "10.0.0.0/8", "a@example.com", "$2b$12$" + "a" * 53,
    "server", "routes", "ip_ranges", "accounts", "hostname", "listen", "spool", "domain",
    "target_host", "addresses", "file", "password", "password_file", "username",
    ".", "/", "", " ", "\n", "-1", "1e9",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(),
    st.text(max_size=30),
    st.sampled_from(MEANINGFUL),
    st.dates(),
    st.binary(max_size=8),
)
keys = st.one_of(st.sampled_from(MEANINGFUL), st.text(max_size=12), st.integers(), st.none())
documents = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=5),
    ),
    max_leaves=25,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place inside the example that holds a value."""
    found = []
    if isinstance(node, dict):
        items: Any = node.items()
    elif isinstance(node, list):
        items = enumerate(node)
    else:
        return []
    for key, child in items:
        found.append((*prefix, key))
        found.extend(_paths(child, (*prefix, key)))
    return found


EXAMPLE_PATHS = _paths(EXAMPLE_DATA)


@st.composite
def mutated_examples(draw: st.DrawFn) -> Any:
    """The example with a few random changes: a value replaced, a key removed or added."""
    data = copy.deepcopy(EXAMPLE_DATA)
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        path = draw(st.sampled_from(EXAMPLE_PATHS))
        parent: Any = data
        try:
            for step in path[:-1]:
                parent = parent[step]
            action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
            if action == "replace":
                parent[path[-1]] = draw(documents)
            elif action == "delete":
                del parent[path[-1]]
            elif isinstance(parent, dict):
                parent[draw(keys)] = draw(documents)
        except (KeyError, IndexError, TypeError):
            pass  # an earlier change removed or replaced this place
    return data


def check(data: object) -> None:
    try:
        result = parse(data, SOURCE)
    except ConfigError as exc:
        assert exc.errors
        for line in exc.errors:
            assert isinstance(line, str)
            assert len(line.splitlines()) == 1, line
            assert line.startswith(f"{SOURCE}: "), line
    else:
        assert isinstance(result, Config)


@SETTINGS
@given(documents)
def test_random_documents(data: object) -> None:
    check(data)


@SETTINGS
@given(st.dictionaries(st.sampled_from(["server", "ip_ranges", "accounts", "routes"]), documents))
def test_random_sections(data: object) -> None:
    check(data)


@SETTINGS
@given(mutated_examples())
def test_mutated_example(data: object) -> None:
    check(data)


@SETTINGS
@given(st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode)))
def test_random_files(content: bytes) -> None:
    fd, name = tempfile.mkstemp(suffix=".yaml")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content)
        try:
            load(name)
        except ConfigError as exc:
            assert exc.errors
            for line in exc.errors:
                assert len(line.splitlines()) == 1, line
                assert line.startswith(f"{name}: "), line
    finally:
        os.unlink(name)
