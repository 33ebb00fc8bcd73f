"""The ``h`` fixture: one in-memory server harness per test."""

from __future__ import annotations

import pytest

from helpers import Harness


@pytest.fixture
def h(tmp_path):
    return Harness(tmp_path)
