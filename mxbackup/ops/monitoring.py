"""The optional SSH manhole and Prometheus listener, added to the server's service tree
(called by ``service.py``)."""

from __future__ import annotations

from typing import Any

from mxbackup.config import Config, ConfigError
from mxbackup.ops.manhole import make_manhole_service
from mxbackup.ops.metrics import make_metrics_service


def add_monitoring(config: Config, top: Any, reactor: Any) -> None:
    """The optional SSH manhole and Prometheus listener (loopback by default)."""
    if config.manhole is not None:
        try:
            manhole = make_manhole_service(
                config.manhole, top.namespace, reactor, config.manhole_host_key
            )
        except (OSError, ValueError) as e:
            raise ConfigError(
                [f"{config.source}: manhole: cannot use {config.manhole_host_key}: {e}"]
            ) from None
        top.watch(manhole, f"manhole.listen: cannot listen on {config.manhole.listen!r}")
        manhole.setServiceParent(top)
    if config.metrics is not None:
        metrics = make_metrics_service(config.metrics, top, reactor)
        top.watch(metrics, f"metrics.listen: cannot listen on {config.metrics.listen!r}")
        metrics.setServiceParent(top)
