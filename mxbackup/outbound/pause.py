"""Paused delivery (``mxbackup pause [ROUTE]`` / ``resume``): mail is still accepted and
queued, but not tried, for one route or for all (globally).

The state survives a restart: it is kept in ``<spool>/paused.json``, written to a temporary
file, fsync'd, renamed over the old one and the directory fsync'd (a crash leaves the old
state or the new, never half of one).  Small and rare: written synchronously.
"""

from __future__ import annotations

import json
import os

from mxbackup.queue.rounds import fsync_dir

FILE = "paused.json"


class Pauses:
    def __init__(self, directory: str) -> None:
        self.path = os.path.join(directory, FILE)
        self.everything = False
        self.routes: set[str] = set()
        self._load()

    def paused(self, key: str) -> bool:
        """Delivery to target ``key`` is paused (globally, or its route)."""
        return self.everything or key in self.routes

    def state(self) -> dict[str, object]:
        return {"global": self.everything, "routes": sorted(self.routes)}

    def pause(self, route: str | None) -> None:
        if route is None:
            self.everything = True
        else:
            self.routes.add(route)
        self._save()

    def resume(self, route: str | None) -> None:
        if route is None:
            self.everything = False
        else:
            self.routes.discard(route)
        self._save()

    def _load(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                data = json.load(f)
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            # Unreadable: delivering what an operator paused is worse than not delivering.
            raise ValueError(f"cannot read {self.path}: {e}") from None
        self.everything = bool(data.get("global"))
        self.routes = {str(r) for r in data.get("routes") or ()}

    def _save(self) -> None:
        directory = os.path.dirname(self.path)
        os.makedirs(directory, exist_ok=True)
        tmp = f"{self.path}.tmp"
        data = json.dumps(self.state(), indent=1).encode() + b"\n"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.path)
        fsync_dir(directory)
