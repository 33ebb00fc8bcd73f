"""The ``mxbackup`` command line.

``mxbackup check-config FILE`` validates a configuration without starting anything: it prints
``OK: FILE (N routes, M ip ranges)`` and exits 0, or prints one line per problem on stderr and
exits 1.

``mxbackup queue list|show|summary|flush|hold|release|delete|bounce``, ``status``, ``pause``,
``resume``, ``monitor`` and ``reload`` (``mxbackup.ops.queuecli``) talk to the running server
over its control socket (``server.control_socket``, default ``<spool>/control.sock``), found
through ``--config`` (default ``/etc/mxbackup/mx.yaml`` when it exists, else ``etc/mx.yaml``)
or given with ``--socket``.  Exit status: 0 done, 1 refused
(the server says why), 2 usage, 3 the server cannot be reached.
"""

from __future__ import annotations

import argparse
import os
import sys

from mxbackup.config import ConfigError, load
from mxbackup.ops import queuecli
from mxbackup.ops.talk import talk
from mxbackup.ops.verifycli import add_verify_parser


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (console scripts pass it to sys.exit)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help or a usage error: argparse has printed the message
        return exc.code if isinstance(exc.code, int) else 2
    try:
        status: int = args.run(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``... | head``): not an error worth a traceback.  Point
        # stdout at /dev/null so that Python's own flush at exit meets no pipe either.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # what a shell reports for a command ended by SIGPIPE
    return status


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mxbackup", description="A backup MX built on Twisted.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    check = commands.add_parser(
        "check-config",
        help="validate a configuration file and report every problem",
        description="Validate a configuration file; print every problem, one per line.",
    )
    check.add_argument("file", metavar="FILE", help="the YAML configuration, e.g. etc/mx.yaml")
    check.set_defaults(run=_check_config)

    hashing = commands.add_parser(
        "hash-password",
        help="print the bcrypt hash of a password, for accounts[].password_hash",
        description="Read a password (asked twice on a terminal, else one line of stdin) "
        "and print its bcrypt hash for accounts[].password_hash.",
    )
    hashing.add_argument(
        "--rounds", type=int, default=12, choices=range(4, 32), metavar="4..31",
        help="bcrypt cost (default 12)",
    )  # fmt: skip
    hashing.set_defaults(run=_hash_password)

    showing = commands.add_parser(
        "config",
        help="print the effective configuration (defaults filled in, secrets masked)",
        description="Print the effective configuration as YAML, every default filled in and "
        "secrets masked (like postconf); --defaults: the defaults alone (postconf -d).",
    )
    showing.add_argument("--config", help="the configuration (default: the server's)")
    showing.add_argument("--defaults", action="store_true", help="the defaults alone")
    showing.set_defaults(run=_show_config)
    queuecli.add_commands(commands)
    where = argparse.ArgumentParser(add_help=False)
    where.add_argument("--config", help="the server's configuration (to find its socket)")
    where.add_argument("--socket", help="the control socket, instead of --config")
    add_verify_parser(commands, where, talk)
    return parser


def _check_config(args: argparse.Namespace) -> int:
    try:
        config = load(args.file)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    from mxbackup.preflight import preflight  # (Twisted's endpoints: only for this command)

    checked = preflight(config)  # what the server checks before it listens
    for line in checked.errors:
        print(line, file=sys.stderr)
    for line in checked.warnings:
        print(f"warning: {line}", file=sys.stderr)
    if checked.errors:
        return 1
    print(f"OK: {args.file} ({len(config.routes)} routes, {len(config.ip_ranges)} ip ranges)")
    return 0


def _show_config(args: argparse.Namespace) -> int:
    from mxbackup.config import dump
    from mxbackup.ops.talk import DEFAULT_CONFIGS

    if args.defaults:
        header = "mxbackup defaults (<required>: no default; null: off)"
        print(dump.to_yaml(dump.defaults(), header), end="")
        return 0
    found = [args.config] if args.config else [c for c in DEFAULT_CONFIGS if os.path.exists(c)]
    if not found:
        print("mxbackup: no configuration found; give --config FILE", file=sys.stderr)
        return 2
    try:
        config = load(found[0])
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    header = f"effective configuration of {found[0]} (defaults filled in, secrets masked;\n''"
    header += ": not set, the key's documented fallback applies)"
    print(dump.to_yaml(dump.effective(config), header), end="")
    return 0


def _hash_password(args: argparse.Namespace) -> int:
    import bcrypt

    if sys.stdin.isatty():
        import getpass

        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            print("mxbackup: the two passwords differ", file=sys.stderr)
            return 1
        secret = password.encode("utf-8")
    else:  # the bytes as given: AUTH compares the client's bytes, whatever their encoding
        secret = sys.stdin.buffer.readline().rstrip(b"\r\n")
    if not secret:
        print("mxbackup: an empty password", file=sys.stderr)
        return 1
    if len(secret) > 72:
        print("mxbackup: bcrypt uses at most 72 bytes of a password", file=sys.stderr)
        return 1
    print(bcrypt.hashpw(secret, bcrypt.gensalt(rounds=args.rounds)).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
