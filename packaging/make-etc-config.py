#!/usr/bin/env python3
"""Make the packaged /etc/mxbackup/mx.yaml from the documented example etc/mx.yaml.

Usage: make-etc-config.py SOURCE DEST

The example listens on 127.0.0.1:2525 with a relative spool and live example routes, for
`make run`. The installed file must start safely on a machine where Postfix or Exim own
port 25: it keeps 127.0.0.1:2525 (loopback, not port 25: nothing is taken from the local MTA,
nothing on the network can send), keeps its queue in /var/spool/mxbackup, and has no routes
(``routes: []``, the examples commented out with a leading ``#``), so it accepts no mail until
the administrator writes a route and a public listen address (README: "Going live").
Only those values change, line by line, so every comment of the example is kept. The
result is checked with PyYAML; if etc/mx.yaml no longer has the expected lines the build
fails here, naming what to update, rather than shipping a configuration for testing.
"""

from __future__ import annotations

import os
import re
import sys

import yaml

LISTEN = "tcp:2525:interface=127.0.0.1"  # loopback, and not port 25: see above
SPOOL = "/var/spool/mxbackup"

HEADER = """\
# /etc/mxbackup/mx.yaml: the configuration of the mxbackup service (Debian package).
#
# Made from the documented example /usr/share/doc/mxbackup/examples/mx.yaml, with the
# service's values: the queue in /var/spool/mxbackup and a SAFE START: SMTP on 127.0.0.1:2525
# only (never port 25, which Postfix or Exim usually own here) and no routes, so the service
# accepts no mail until you configure it. To go live (README, "Going live"):
#   1. server.hostname: this host's name; server.listen: "tcp:25" (every address; the unit
#      grants CAP_NET_BIND_SERVICE) once nothing else listens on port 25 here;
#   2. routes: write one per domain you back up (the commented examples below show how);
#   3. mxbackup check-config /etc/mxbackup/mx.yaml && systemctl restart mxbackup
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
ROUTES = re.compile(r"^routes:[ \t]*\n(?P<block>(?:[ \t].*\n|\n)*)", re.M)  # indented or blank


def comment_routes(text: str) -> str:
    """``routes: []``, with the example routes kept as comments (``#`` before each line)."""
    match = ROUTES.search(text)
    if match is None or "- domain:" not in match.group("block"):
        raise SystemExit("make-etc-config: no routes block with '- domain:' items in the example")
    lines = match["block"].splitlines(True)
    block = "".join(f"#{line}" if line.strip() else line for line in lines)
    head = "routes: []   # none yet: no mail is accepted. Examples (remove the leading '#'):\n"
    return text[: match.start()] + head + block + text[match.end() :]


def transform(text: str) -> str:
    for pattern, replacement, what in EDITS:
        text, count = pattern.subn(replacement, text)
        if count != 1:
            raise SystemExit(
                f"make-etc-config: expected exactly one line for {what} matching "
                f"{pattern.pattern!r} in the example, found {count}: update "
                "packaging/make-etc-config.py to the new etc/mx.yaml"
            )
    text = comment_routes(text)
    # Point the examples in the comments at the installed file.
    text = text.replace("check-config etc/mx.yaml", "check-config /etc/mxbackup/mx.yaml")
    text = text.replace("(loopback only, as here for testing)", "(loopback only, for testing)")
    return HEADER + text


def check(text: str) -> None:
    data = yaml.safe_load(text)
    server = data["server"]
    if data.get("routes") != []:
        raise SystemExit(f"make-etc-config: result has live routes: {data.get('routes')!r}")
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
