"""``twistd --logger mxbackup.logs.json``: the documented name of the JSON log observer (the
code is in ``mxbackup.ops.logs``)."""

from mxbackup.ops.logs import json

__all__ = ["json"]
