"""The configuration as YAML again: ``mxbackup config`` (the effective configuration, every
default filled in, like ``postconf``) and ``mxbackup config --defaults`` (``postconf -d``).

Walks the same declarative settings the reader uses (``settings_of``): no second list of keys.
Secrets are masked: passwords (``password``/``password_file`` show as ``password: "***"``),
password hashes, and the password in a URL (``redis://:secret@host``); key files are shown
by path, never by content.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from typing import Any

import yaml

from mxbackup.config.model import Config
from mxbackup.config.reader import MISSING, Items, Setting, default_of, settings_of
from mxbackup.config.values import AddressList, Target

MASK = "***"
REQUIRED = "<required>"
_SECRET_KEYS = {"password", "password_hash", "secret", "token"}
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^/@:]*:)[^/@]*(?P<tail>@)", re.I)


def effective(config: Config) -> dict[str, Any]:
    """Every key of ``config`` with the value the server uses."""
    return _section(config)


def defaults() -> dict[str, Any]:
    """Every key with its default: ``<required>`` where there is none, a derived default
    described, an optional section that is off as null."""
    return _defaults(Config)


def to_yaml(data: dict[str, Any], header: str) -> str:
    body = yaml.safe_dump(data, sort_keys=False, default_flow_style=False, allow_unicode=True)
    return "".join(f"# {line}\n" for line in header.splitlines()) + body


def _section(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f, s in settings_of(type(obj)):
        key = s.keys[0] if s.read_keys is not None else (s.key or f.name)
        value = getattr(obj, f.name)
        if key in _SECRET_KEYS or f.name in _SECRET_KEYS:
            out["password" if s.read_keys is not None else key] = MASK if value else value
        else:
            out[key] = _value(value)
    return out


def _value(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and settings_of(type(value)):
        return _section(value)
    if isinstance(value, Target):
        return _host_port(value.host, value.port)
    if isinstance(value, AddressList):
        if value.kind == "file":
            return {"file": value.file}
        return "all" if value.kind == "all" else sorted(value.entries)
    if _is_address_and_port(value):
        return _host_port(*value)
    if isinstance(value, tuple | list | frozenset | set):
        return [_value(item) for item in value]
    return _scalar(value)


def _scalar(value: Any) -> Any:
    if isinstance(value, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        return _URL_PASSWORD.sub(rf"\g<head>{MASK}\g<tail>", value)
    return value


def _is_address_and_port(value: Any) -> bool:
    """(address, port), as ``delivery.dns_servers`` holds them."""
    return (
        isinstance(value, tuple)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def _host_port(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _defaults(cls: type) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f, s in settings_of(cls):
        key = s.keys[0] if s.read_keys is not None else (s.key or f.name)
        out[key] = _default(f, s)
    return out


def _default(f: dataclasses.Field[Any], s: Setting) -> Any:
    if s.derive is not None:
        return f"<derived: {s.doc}>"
    default = default_of(f)
    if default is MISSING:
        if s.section is not None:
            return _defaults(s.section)
        if isinstance(s.read, Items) and isinstance(s.read.element, type):
            return [_defaults(s.read.element)]  # what one item holds
        return REQUIRED
    return _value(default)
