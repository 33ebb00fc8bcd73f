"""Reading ``server.state_store``: where the verification cache and greylisting live."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass
from typing import Literal

from mxbackup.config.reader import Reader, show

SQLITE = "sqlite:"
REDIS = "redis://"


@dataclass(frozen=True)
class StoreURL:
    """A parsed state store: ``sqlite`` with ``path``, or ``redis`` with host, port, db."""

    kind: Literal["sqlite", "redis"]
    path: str = ""
    host: str = ""
    port: int = 6379
    db: int = 0
    password: str | None = None


def parse_store(text: str) -> StoreURL | str:
    """The store named by ``text``, or the reason it names none."""
    if text.startswith(SQLITE):
        path = text[len(SQLITE) :]
        return StoreURL("sqlite", path=path) if path else "sqlite: needs a file path"
    if not text.startswith(REDIS):
        return "must be 'sqlite:PATH' or 'redis://HOST:PORT/DB'"
    url = urllib.parse.urlsplit(text)
    try:
        port = url.port or 6379
    except ValueError:
        return "the port must be a number from 1 to 65535"
    db_text = url.path.lstrip("/") or "0"
    if not url.hostname:
        return "redis:// needs a host"
    if not db_text.isdigit():
        return f"the database must be a number, got {db_text!r}"
    if url.query or url.fragment:
        return "no query or fragment is understood"
    return StoreURL("redis", host=url.hostname, port=port, db=int(db_text), password=url.password)


def state_store(r: Reader, value: object, path: str) -> str:
    """``sqlite:PATH`` or ``redis://[:password@]HOST[:PORT][/DB]``; "" for the default."""
    if not isinstance(value, str):
        r.error(path, f"must be 'sqlite:PATH' or 'redis://HOST:PORT/DB', got {show(value)}")
        return ""
    if value == "":
        return ""
    parsed = parse_store(value)
    if isinstance(parsed, str):
        r.error(path, f"{parsed}, got {show(value)}")
        return ""
    return value
