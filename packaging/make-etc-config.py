#!/usr/bin/env python3
"""Make the packaged /etc/mxbackup/mx.yaml from the documented example etc/mx.yaml.

Usage: make-etc-config.py SOURCE DEST

The example listens on 127.0.0.1:2525 with a relative spool, for `make run`. The installed
service listens on port 25 of every IPv4 address and keeps its queue in /var/spool/mxbackup.
Only those two values change, line by line, so every comment of the example is kept. The
result is checked with PyYAML; if etc/mx.yaml no longer has the expected lines the build
fails here, naming what to update, rather than shipping a configuration for testing.
"""

from __future__ import annotations

import os
import re
import sys

import yaml

LISTEN = "tcp:25"
SPOOL = "/var/spool/mxbackup"

HEADER = """\
# /etc/mxbackup/mx.yaml: the configuration of the mxbackup service (Debian package).
#
# Made from the documented example /usr/share/doc/mxbackup/examples/mx.yaml, with the
# service's values: listen on port 25 (the systemd unit grants CAP_NET_BIND_SERVICE, the
# server runs as the "mxbackup" user) and the queue in /var/spool/mxbackup. The routes below
# are examples (example.com, *.example.org): replace them with the domains you back up.
#
# After editing:  mxbackup check-config /etc/mxbackup/mx.yaml && systemctl reload mxbackup
# The service runs in /var/spool/mxbackup: relative paths below are relative to it, so
# prefer absolute paths (e.g. /etc/mxbackup/tls/cert.pem).
#
"""

# (pattern, replacement, what): each pattern must match exactly one line.
EDITS = [
    (
        re.compile(r'^(?P<indent>[ \t]+- )"tcp:2525:interface=127\.0\.0\.1"[ \t]*$', re.M),
        rf'\g<indent>"{LISTEN}"',
        "the server.listen item",
    ),
    (
        re.compile(r"^(?P<indent>[ \t]+spool:[ \t]*)\./spool[ \t]*$", re.M),
        rf"\g<indent>{SPOOL}",
        "server.spool",
    ),
]


def transform(text: str) -> str:
    for pattern, replacement, what in EDITS:
        text, count = pattern.subn(replacement, text)
        if count != 1:
            raise SystemExit(
                f"make-etc-config: expected exactly one line for {what} matching "
                f"{pattern.pattern!r} in the example, found {count}: update "
                "packaging/make-etc-config.py to the new etc/mx.yaml"
            )
    # Point the examples in the comments at the installed file.
    text = text.replace("check-config etc/mx.yaml", "check-config /etc/mxbackup/mx.yaml")
    text = text.replace("(loopback only, as here for testing)", "(loopback only, for testing)")
    return HEADER + text


def check(text: str) -> None:
    data = yaml.safe_load(text)
    server = data["server"]
    if server.get("listen") != [LISTEN] or server.get("spool") != SPOOL:
        raise SystemExit(
            f"make-etc-config: result has listen={server.get('listen')!r} "
            f"spool={server.get('spool')!r}, expected [{LISTEN!r}] and {SPOOL!r}"
        )


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    source, dest = argv[1], argv[2]
    with open(source, encoding="utf-8") as f:
        text = transform(f.read())
    check(text)
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    with open(dest, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
