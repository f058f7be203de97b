"""Fixtures for every suite. Unit tests use none of them, so they never start the stack;
integration, e2e and browser tests start the real one (tests/support/infra.py)."""

import pytest
from hypothesis import settings as hypothesis_settings

from tests.support.infra import prometheus, scratch_dsn, scratch_topic, settings, stack
from tests.support.platform import platform

# No per-example deadline: on a shared machine one slow example is a pause of the
# machine, not a finding (it would fail the property test with DeadlineExceeded).
hypothesis_settings.register_profile("shared-machine", deadline=None)
hypothesis_settings.load_profile("shared-machine")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests marked ``sweep`` look back over everything the session did (every email
    the platform sent): they run last, whatever their place in the tree."""
    items.sort(key=lambda item: item.get_closest_marker("sweep") is not None)


__all__ = [
    "platform",
    "prometheus",
    "scratch_dsn",
    "scratch_topic",
    "settings",
    "stack",
]
