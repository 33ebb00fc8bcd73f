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

from twisted.logger import (
    FileLogObserver,
    ILogObserver,
    formatEvent,
    formatEventAsClassicLogText,
    formatTime,
    timeFormatRFC3339,
)

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


class _Stamp:
    """``formatTime`` of twistd's text log, computed once per second (it builds a time zone
    and a datetime per call: a tenth of a delivery's cost during a drain)."""

    def __init__(self) -> None:
        self._second: int | None = None
        self._text = "-"

    def __call__(self, when: float | None) -> str:
        if when is None:
            return "-"
        second = int(when // 1)
        if second != self._second:
            self._second, self._text = second, formatTime(second, timeFormatRFC3339)
        return self._text


def classic_text(stamp: _Stamp) -> Any:
    """Twistd's text line, ``{time} [{namespace}#{level}] {text}``, byte for byte (a test
    compares): our events (plain ``{name}`` fields, no failure) formatted with ``format_map``;
    any other, or any that does not format so, by Twisted's own code."""

    def render(event: dict[str, Any]) -> str | None:
        fmt = event.get("log_format")
        if type(fmt) is str and "log_failure" not in event and "log_flattened" not in event:
            if "(" not in fmt:  # Twisted's "{f()}" calls: not str.format's
                try:
                    text = fmt.format_map(event)
                except Exception:  # noqa: BLE001 - Twisted's code says how it failed
                    text = None
                if text is not None:
                    if not text:
                        return None
                    system = event.get("log_system")
                    if system is None:
                        level = event.get("log_level")
                        name = level.name if level is not None else "-"
                        system = f"{event.get('log_namespace', '-')}#{name}"
                    line = f"{stamp(event.get('log_time'))} [{system}] {text}"
                    return line.replace("\n", "\n\t") + "\n"
        return formatEventAsClassicLogText(event, formatTime=stamp)

    return render


def text_observer(out: IO[str] | None = None) -> ILogObserver:
    """Twistd's default text log to ``out`` (stdout), at a fraction of its cost."""
    return FileLogObserver(out or sys.stdout, classic_text(_Stamp()))


def default_for(twistd_options: Any) -> ILogObserver | None:
    """The observer to install when twistd would use its own text log on stdout (``-n``, no
    ``--logger``, ``--logfile`` or ``--syslog``): ours, the same lines; else None."""
    try:
        opts = dict(twistd_options)
    except (TypeError, ValueError):
        return None
    logfile = opts.get("logfile") or ""
    if opts.get("logger") or opts.get("syslog") or not opts.get("nodaemon"):
        return None
    return text_observer() if logfile in ("", "-") else None
