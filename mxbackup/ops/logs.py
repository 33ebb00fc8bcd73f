"""Log observers for twistd's ``--logger`` option.

``twistd -n --logger mxbackup.logs.json mxbackup --config FILE`` writes one JSON object per line
to standard output (journald and log shippers read it as is); the default is twistd's text log.
Each of our events carries its fields (``id``, ``rcpt``, ``code``...) as keys beside ``text``.
No event carries a secret: passwords and AUTH responses are never logged.
"""

from __future__ import annotations

import json as _json
import sys
from datetime import UTC, datetime
from typing import IO, Any

from twisted.logger import FileLogObserver, ILogObserver, formatEvent

_SIMPLE = (str, int, float, bool, type(None))
_SKIP = {
    "log_logger",
    "log_source",
    "log_format",
    "log_time",
    "log_level",
    "log_namespace",
    "log_io",
    "log_system",
    "log_failure",
    "log_trace",
    "log_flattened",
    "format",
    "message",
    "isError",
    "system",
    "time",
    "log_text",
}


def render_json(event: dict[str, Any]) -> str:
    record: dict[str, Any] = {
        "time": datetime.fromtimestamp(event.get("log_time", 0), UTC).isoformat(),
        "level": getattr(event.get("log_level"), "name", "info"),
        "namespace": event.get("log_namespace", ""),
        "text": formatEvent(event),
    }
    failure = event.get("log_failure")
    if failure is not None:
        record["traceback"] = failure.getTraceback()
    for key, value in event.items():
        if key not in _SKIP and not key.startswith("_") and isinstance(value, _SIMPLE):
            record.setdefault(key, value)
    return _json.dumps(record, separators=(",", ":")) + "\n"


def json_observer(out: IO[str] | None = None) -> ILogObserver:
    return FileLogObserver(out or sys.stdout, render_json)


json = json_observer  # noqa: F811 - the name operators type: --logger mxbackup.logs.json
