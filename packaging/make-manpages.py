#!/usr/bin/env python3
"""Make the package's man pages: mxbackup(8) and mx.yaml(5).

Usage: make-manpages.py SOURCEDIR OUTDIR      (run with the package venv's python, -I)

- ``mxbackup.8`` is written by hand (SOURCEDIR/mxbackup.8). It is checked here against the
  command line's parser: every command, every action (``queue list``...) and every option
  (``--older-than``...) must be named in it, else the build fails naming what is missing.
- ``mx.yaml.5`` is SOURCEDIR/mx.yaml.5.in with ``@KEYS@`` replaced by one entry per key,
  walked from the declarative configuration (``mxbackup.config.reader.walk_keys``: the same
  settings the reader uses, with each setting's one-line doc and its default), so the page
  lists exactly the keys the server reads.

``@VERSION@`` and ``@DATE@`` come from debian/changelog (SOURCE_DATE_EPOCH when set, for
reproducible builds). The output is plain roff; dh_installman installs and gzips it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

from mxbackup.config import AddressList
from mxbackup.config.model import Config
from mxbackup.config.reader import MISSING, Items, Setting, default_of, settings_of, walk_keys
from mxbackup.ops import cli


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    src, out = Path(argv[0]), Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    version, date = _version_and_date()

    page = (src / "mxbackup.8").read_text()
    missing = [name for name in cli_names(cli._parser()) if _roff(name) not in page]
    if missing:
        print(f"{src}/mxbackup.8 does not mention: {', '.join(missing)}", file=sys.stderr)
        return 1
    (out / "mxbackup.8").write_text(_fill(page, version, date))

    template = (src / "mx.yaml.5.in").read_text()
    lines = _fill(template, version, date).splitlines(keepends=True)
    if lines.count("@KEYS@\n") != 1:
        print(f"{src}/mx.yaml.5.in needs one line @KEYS@", file=sys.stderr)
        return 1
    keys = config_keys() + "\n"
    (out / "mx.yaml.5").write_text("".join(keys if line == "@KEYS@\n" else line for line in lines))
    return 0


# --- mxbackup(8): what the command line has --------------------------------------------------


def cli_names(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    """Every command ("queue list"), and every long option, of the parser and its commands.

    argparse has no public way to list subcommands; ``_actions`` is the standard library's
    (stable since Python 3.2), read here at build time only."""
    names: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                full = f"{prefix}{name}"
                names.append(full)
                names += cli_names(sub, f"{full} ")
        else:
            names += [o for o in action.option_strings if o.startswith("--") and o != "--help"]
    return sorted(set(names), key=names.index)


def _roff(text: str) -> str:
    """How a command or option is written in the page: hyphens as \\-."""
    return text.replace("-", "\\-")


# --- mx.yaml(5): one entry per key ----------------------------------------------------------


def config_keys() -> str:
    lines: list[str] = []
    for path, f, s in walk_keys(Config):
        if "." not in path.replace("[]", ""):  # a top-level key: a subsection of its own
            lines += [f".SS {_escape(path)}", ".PP"]
        else:
            lines += [".TP", f".B {_escape(path)}"]
        lines += [_sentence(s.doc), _default_text(f, s)]
    return "\n".join(line for line in lines if line)


def _default_text(f: dataclasses.Field[Any], s: Setting) -> str:
    if s.derive is not None:
        return "Default: derived, as said above."
    default = default_of(f)
    if default is MISSING:
        if s.section is not None:
            return "Required: a mapping with the keys below."
        if isinstance(s.read, Items) and isinstance(s.read.element, type):
            return "Required: a list of mappings with the keys below."
        return "\\fBRequired.\\fR"
    if s.section is not None:
        return _section_default(s.section, default)
    if isinstance(default, AddressList) and default.kind == "all":
        return "Default: \\fBall\\fR."
    if isinstance(default, tuple | list) and any(_is_mapping(item) for item in default):
        return "Default: see \\fBmxbackup config \\-\\-defaults\\fR."
    shown = _show(default)
    if shown is None:  # no value: the doc says what applies
        return "" if "default" in s.doc.lower() else "Default: not set."
    return f"Default: \\fB{_escape(shown)}\\fR."


def _section_default(section: type, default: Any) -> str:
    if default is None:
        return "Optional: without it, off."
    if all(default_of(sub) is not MISSING for sub, _ in settings_of(section)):
        return "Optional: each key below has its default."
    return (
        "Optional: when given, it needs the keys marked Required below; without it, see "
        "\\fBmxbackup config \\-\\-defaults\\fR."
    )


def _is_mapping(value: Any) -> bool:
    return isinstance(value, dict) or dataclasses.is_dataclass(value)


def _show(value: Any) -> str | None:
    if value is None or value == "":
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, tuple | list | frozenset | set):
        return "[" + ", ".join(_show(item) or '""' for item in value) + "]"
    return str(value)


def _sentence(doc: str) -> str:
    doc = doc.strip()  # as written (lower case: it often starts with a value, "sqlite:PATH")
    return _escape(doc if doc.endswith(".") else doc + ".")


def _escape(text: str) -> str:
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


# --- version and date -------------------------------------------------------------------------


def _version_and_date() -> tuple[str, str]:
    changelog = Path(__file__).resolve().parents[1] / "debian" / "changelog"
    version = "unknown"
    if changelog.is_file():
        first = changelog.read_text().splitlines()[0]
        found = re.search(r"\(([^)]+)\)", first)
        version = found.group(1) if found else version
    epoch = os.environ.get("SOURCE_DATE_EPOCH")
    if epoch is None and changelog.is_file():
        proc = subprocess.run(
            ["dpkg-parsechangelog", "-l", str(changelog), "-S", "Timestamp"],
            capture_output=True,
            text=True,
            check=False,
        )
        epoch = proc.stdout.strip() or None
    when = datetime.datetime.fromtimestamp(int(epoch or 0), datetime.UTC)
    return version, when.strftime("%Y-%m-%d")


def _fill(text: str, version: str, date: str) -> str:
    return text.replace("@VERSION@", version).replace("@DATE@", date)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
