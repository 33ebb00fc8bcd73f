"""Value readers for plain values: strings, numbers, booleans, choices and files to read.

Each takes ``(reader, value, path)`` for a key that is present, reports a problem as one line
and then returns a placeholder of the right type.
"""

from __future__ import annotations

import math
import os
import stat

from mxbackup.config.reader import Read, Reader, show


def text(r: Reader, value: object, path: str) -> str:
    """A non-empty string; "" after reporting a problem."""
    if isinstance(value, str) and value.strip():
        return value
    r.error(path, f"must be a non-empty string, got {show(value)}")
    return ""


def integer(minimum: int, maximum: int | None = None) -> Read:
    """A reader of integers from ``minimum`` (to ``maximum``); true and false are refused."""
    limits = f"from {minimum} to {maximum}" if maximum is not None else f">= {minimum}"

    def read(r: Reader, value: object, path: str) -> int:
        if isinstance(value, int) and not isinstance(value, bool) and value >= minimum:
            if maximum is None or value <= maximum:
                return value
        r.error(path, f"must be an integer {limits}, got {show(value)}")
        return minimum

    return read


def seconds(r: Reader, value: object, path: str) -> float:
    """A finite number greater than 0, as a float."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if math.isfinite(number) and number > 0:
            return number
    r.error(path, f"must be a number of seconds > 0, got {show(value)}")
    return 1.0


def seconds_or_off(r: Reader, value: object, path: str) -> float:
    """Like `seconds`, but 0 is allowed and means off."""
    return 0.0 if value == 0 else seconds(r, value, path)


def boolean(r: Reader, value: object, path: str) -> bool:
    if isinstance(value, bool):
        return value
    r.error(path, f"must be true or false, got {show(value)}")
    return False


def choice(*choices: str) -> Read:
    """A reader of one of the strings ``choices``."""

    def read(r: Reader, value: object, path: str) -> str:
        if isinstance(value, str) and value in choices:
            return value
        r.error(path, f"must be one of {' | '.join(choices)}, got {show(value)}")
        return choices[0]

    return read


def readable_file(r: Reader, value: object, path: str) -> str:
    """A file name whose file can be opened for reading now."""
    filename = text(r, value, path)
    if filename:
        read_text(r, path, filename, decode=False)
    return filename


def others_can_read(filename: str) -> bool:
    """Whether every user of this host may read ``filename`` (mode o+r)."""
    try:
        return bool(os.stat(filename).st_mode & stat.S_IROTH)
    except OSError:
        return False


def warn_if_public(r: Reader, path: str, filename: str) -> None:
    """A warning when a file holding a secret (a key, a password) is readable by all."""
    if filename and others_can_read(filename):
        mode = stat.S_IMODE(os.stat(filename).st_mode)
        r.warning(
            path,
            f"{show(filename)} holds a secret and every user of this host can read it "
            f"(mode {mode:04o}): chmod o-r it (e.g. 0640 root:mxbackup)",
        )


def secret_file(r: Reader, value: object, path: str) -> str:
    """`readable_file` for a key or password file: a warning when others can read it."""
    filename = readable_file(r, value, path)
    warn_if_public(r, path, filename)
    return filename


def optional_secret_file(r: Reader, value: object, path: str) -> str | None:
    return secret_file(r, value, path) or None


def optional_file(r: Reader, value: object, path: str) -> str | None:
    """`readable_file`, or None after a problem (for a key whose default is None)."""
    return readable_file(r, value, path) or None


def read_text(r: Reader, path: str, filename: str, decode: bool = True) -> str | None:
    """The content of a regular file (not a pipe or device, which could block us)."""
    try:
        if not stat.S_ISREG(os.stat(filename).st_mode):
            r.error(path, f"{show(filename)} is not a regular file")
            return None
        with open(filename, "rb") as f:  # opening proves we may read it
            return f.read().decode("utf-8") if decode else ""
    except UnicodeDecodeError:
        r.error(path, f"{show(filename)} is not UTF-8 text")
    except (OSError, ValueError) as exc:
        r.error(path, f"cannot read {show(filename)}: {_os_reason(exc)}")
    return None


def _os_reason(exc: Exception) -> str:
    if isinstance(exc, FileNotFoundError):
        return "no such file (relative paths start from the current directory)"
    return getattr(exc, "strerror", None) or str(exc)
