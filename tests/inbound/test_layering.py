"""The import graph of ``mxbackup`` has no cycles, counting every import in a file: at the top,
inside functions and under ``if TYPE_CHECKING:`` (an import made only for a type hint is an
arrow too).  Read from the sources with ``ast``; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

import mxbackup

ROOT = Path(mxbackup.__file__).parent


def module_files(root: Path = ROOT) -> dict[str, Path]:
    """Every module of the package under ``root``, by dotted name (a package is its
    ``__init__``)."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root.parent).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".")
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join(base + ([node.module] if node.module else []))


def imported(source: str, module: str, known: set[str], is_package: bool = False) -> set[str]:
    """The modules of ``known`` that ``source`` (the text of ``module``) imports, anywhere in
    it.  ``from a.b import c`` is an arrow to ``a.b.c`` when that is a module, else to ``a.b``."""
    targets = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            targets.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(node, module, is_package)
            for alias in node.names:
                name = f"{base}.{alias.name}"
                targets.add(name if name in known else base)
    return (targets & known) - {module}


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    files = module_files(root)
    known = set(files)
    return {
        module: imported(path.read_text(), module, known, path.name == "__init__.py")
        for module, path in files.items()
    }


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` as the path of its modules (first == last), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done, no cycle through it
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (cycle := visit(target)) is not None:
                return cycle
        path.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)) is not None:
            return cycle
    return None


def test_no_import_cycle_in_mxbackup():
    graph = import_graph()
    assert "mxbackup.inbound.server" in graph  # the walk found the package
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_every_import_counts_type_checking_and_local_ones_too():
    known = {"p", "p.a", "p.b", "p.c", "p.d", "p.e"}
    source = (
        "from typing import TYPE_CHECKING\n"
        "import p.a\n"
        "from p import b\n"
        "from . import e\n"
        "if TYPE_CHECKING:\n"
        "    from p.c import Thing\n"
        "def f():\n"
        "    from .d import other\n"
    )
    assert imported(source, "p.x", known) == {"p.a", "p.b", "p.c", "p.d", "p.e"}
    assert imported("from p import not_a_module\n", "p.x", known) == {"p"}
    assert imported("from . import a\n", "p", known, is_package=True) == {"p.a"}


def test_a_cycle_is_found_and_shown():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
