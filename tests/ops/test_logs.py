"""The JSON log observer: one JSON object per line, event fields as keys."""

from __future__ import annotations

import io
import json

from twisted.logger import Logger, LogLevel, LogPublisher

from mxbackup.ops.logs import json_observer, render_json


def test_one_json_object_per_line_with_fields():
    out = io.StringIO()
    publisher = LogPublisher(json_observer(out))
    log = Logger(namespace="mxbackup.test", observer=publisher)
    log.info("accepted id={id} size={size}", id="ABC", size=12)
    log.error("multi\nline {x}", x="y")
    lines = out.getvalue().splitlines()
    assert len(lines) == 2
    first, second = (json.loads(line) for line in lines)
    assert first["text"] == "accepted id=ABC size=12"
    assert first["id"] == "ABC" and first["size"] == 12
    assert first["level"] == "info" and first["namespace"] == "mxbackup.test"
    assert second["text"] == "multi\nline y" and second["level"] == "error"


def test_render_skips_objects_that_are_not_plain_values():
    line = render_json(
        {
            "log_format": "x {o}",
            "o": object(),
            "log_level": LogLevel.warn,
            "log_time": 0,
            "log_namespace": "n",
        }
    )
    record = json.loads(line)
    assert "o" not in record and record["level"] == "warn"
