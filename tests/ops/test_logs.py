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


# -- the text observer: twistd's lines, cheaper ---------------------------------------------------
class Odd:
    def __str__(self) -> str:
        return "odd"

    def method(self) -> str:
        return "called"


def both_render(emit) -> tuple[str, str]:
    """What Twisted's text observer and ours write for the same events."""
    from twisted.logger import textFileLogObserver

    from mxbackup.ops.logs import text_observer

    theirs, ours = io.StringIO(), io.StringIO()
    publisher = LogPublisher(textFileLogObserver(theirs), text_observer(ours))
    emit(Logger(namespace="mxbackup.test", observer=publisher))
    return theirs.getvalue(), ours.getvalue()


def test_the_text_observer_writes_twistds_lines_byte_for_byte():
    def emit(log: Logger) -> None:
        log.info("delivery id={id} rcpt=<{rcpt}> attempt={n}", id="A1", rcpt="u@x", n=2)
        log.warn("two\nlines {x!r} {y:>4}", x="q", y=7)
        log.info("braces {{literal}} and {o} {o.method()}", o=Odd())  # a call: Twisted's code
        log.error("missing {nope}")  # does not format: Twisted says so
        log.info("")  # nothing: no line
        log.debug("with system {x}", x=1, log_system="custom")
        try:
            raise ZeroDivisionError("division by zero")
        except ZeroDivisionError:
            log.failure("it failed id={id}", id="B2")
        log.emit(LogLevel.info, None)  # no format at all

    theirs, ours = both_render(emit)
    assert ours == theirs and "delivery id=A1" in ours and "ZeroDivisionError" in ours


def test_the_time_stamp_is_cached_per_second_and_right_across_seconds():
    from twisted.logger import formatTime

    from mxbackup.ops.logs import _Stamp

    stamp = _Stamp()
    for when in (1_764_954_181.0, 1_764_954_181.999, 1_764_954_182.0, 5.5, None):
        assert stamp(when) == formatTime(when)


def test_installed_only_where_twistd_would_write_its_text_log_to_stdout():
    from mxbackup.ops.logs import default_for

    base = {"nodaemon": True, "logfile": None, "logger": None, "syslog": False}
    assert default_for(base) is not None
    assert default_for({**base, "logfile": "-"}) is not None
    assert default_for({**base, "logfile": "/var/log/mx.log"}) is None  # twistd's rotation
    assert default_for({**base, "logger": "mxbackup.logs.json"}) is None
    assert default_for({**base, "syslog": True}) is None
    assert default_for({**base, "nodaemon": False}) is None
    assert default_for(None) is None


def test_the_service_gives_its_observer_to_the_application():
    from twisted.application.service import Application
    from twisted.logger import ILogObserver

    from mxbackup.service import MXBackupService

    top = MXBackupService(None, None, None, None, None)  # type: ignore[arg-type]
    observer = object()
    top.log_observer = observer
    app = Application("mxbackup")
    top.setServiceParent(app)
    assert app.getComponent(ILogObserver) is observer
