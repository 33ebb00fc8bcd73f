"""Reading the file: YAML text in, a `Config` out, or `ConfigError` with one line a problem."""

from __future__ import annotations

import dataclasses

import yaml

from mxbackup.config.checks import check_exempt_ranges
from mxbackup.config.model import Config
from mxbackup.config.reader import ConfigError, Reader, one_line, read_section, show


def load(path: str) -> Config:
    """Read and parse the YAML file at ``path``; raise `ConfigError` listing every problem."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ConfigError([one_line(f"{path}: file not found")]) from None
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError([one_line(f"{path}: cannot read the file: {reason}")]) from None
    try:
        data = yaml.safe_load(raw)
    except yaml.MarkedYAMLError as exc:
        raise ConfigError([one_line(f"{path}: {_yaml_problem(exc)}")]) from None
    except yaml.YAMLError as exc:  # e.g. ReaderError: bad encoding or a control character
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        where = getattr(exc, "position", None)
        at = f" at character {where}" if isinstance(where, int) else ""
        raise ConfigError([one_line(f"{path}: not valid YAML text{at}: {first_line}")]) from None
    except RecursionError:
        raise ConfigError([f"{one_line(path)}: YAML is nested too deeply"]) from None
    except (ValueError, OverflowError) as exc:  # e.g. an impossible date, a 5000-digit number
        raise ConfigError([one_line(f"{path}: YAML value cannot be read: {exc}")]) from None
    return parse(data, path)


def parse(data: object, source: str) -> Config:
    """Turn the data of a YAML document into a `Config`; ``source`` names it in errors."""
    r = Reader(source)
    if not isinstance(data, dict):
        what = "the file is empty" if data is None else f"got {show(data)}"
        r.errors.append(
            one_line(
                f"{source}: the top level must be a mapping with the keys server, ip_ranges, "
                f"accounts and routes; {what}"
            )
        )
        raise ConfigError(r.errors)
    config = read_section(r, data, "", Config, fixed={"source": source})
    if config is not None:
        check_exempt_ranges(r, config.checks, {ip_range.name for ip_range in config.ip_ranges})
    if r.errors or config is None:
        raise ConfigError(r.errors)
    return dataclasses.replace(config, warnings=tuple(r.warnings)) if r.warnings else config


def _yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
    problem = exc.problem or "invalid YAML"
    if exc.context:
        if problem.startswith("but "):
            problem = f"{exc.context}, {problem}"
        else:
            problem = f"{problem} ({exc.context})"
    return f"YAML syntax error{where}: {problem}"
