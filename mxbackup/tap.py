"""twistd glue: ``twistd -n mxbackup --config etc/mx.yaml``."""

from __future__ import annotations

import sys
from typing import Any

from twisted.python import usage

from mxbackup import config as config_module
from mxbackup.config import ConfigError


class Options(usage.Options):
    synopsis = "[--config FILE]"
    optParameters = [["config", "c", "etc/mx.yaml", "The configuration file (YAML)."]]

    def postOptions(self) -> None:
        try:
            self.loaded = config_module.load(self["config"])
        except ConfigError as e:
            _fail(e)


def _fail(error: ConfigError) -> None:
    for line in error.errors:
        sys.stderr.write(f"mxbackup: {line}\n")
    sys.stderr.flush()
    raise SystemExit(1)


def makeService(options: Options) -> Any:
    from twisted.internet import reactor

    from mxbackup.ops.logs import default_for
    from mxbackup.service import make_service

    try:
        service = make_service(options.loaded, reactor)
    except ConfigError as e:
        _fail(e)
    parent = getattr(options, "parent", None)  # twistd's own options
    if parent is not None:
        service.log_observer = default_for(parent)  # the same lines as twistd's, cheaper
    return service
