"""The ``mxbackup`` command line.

``mxbackup check-config FILE`` validates a configuration without starting anything: it prints
``OK: FILE (N routes, M ip ranges)`` and exits 0, or prints one line per problem on stderr and
exits 1.
"""

from __future__ import annotations

import argparse
import sys

from mxbackup.config import ConfigError, load


def main(argv: list[str] | None = None) -> int:
    """Run the command line; returns the exit status (console scripts pass it to sys.exit)."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help or a usage error: argparse has printed the message
        return exc.code if isinstance(exc.code, int) else 2
    status: int = args.run(args)
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
    return parser


def _check_config(args: argparse.Namespace) -> int:
    try:
        config = load(args.file)
    except ConfigError as exc:
        for line in exc.errors:
            print(line, file=sys.stderr)
        return 1
    print(f"OK: {args.file} ({len(config.routes)} routes, {len(config.ip_ranges)} ip ranges)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
