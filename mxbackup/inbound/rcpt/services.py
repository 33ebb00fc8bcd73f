"""What the RCPT chain's links need from outside the configuration, built once by
``service.py`` and kept across reloads: the target view (health, queue depth) and the
verification link (its cache, callouts, in-flight callouts).  Without it (tests, tools) the
links that need it see an unknown view and no verification."""

from __future__ import annotations

from dataclasses import dataclass, field

from mxbackup.health_view import TargetView, UnknownTargets
from mxbackup.inbound.rcpt.verify import Verification
from mxbackup.stats import Stats


@dataclass
class RcptServices:
    view: TargetView = field(default_factory=UnknownTargets)
    stats: Stats = field(default_factory=Stats)
    verification: Verification | None = None
