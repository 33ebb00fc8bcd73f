"""``python -m mxbackup.cli``: the command's documented entry point (the code is in
``mxbackup.ops.cli``)."""

from mxbackup.ops.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
