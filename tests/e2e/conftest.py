"""Everything here runs the real twistd (or the package, or outside tools): the e2e tier.

``pytest -m "not e2e"`` leaves it out."""

import pytest


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "/tests/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)
