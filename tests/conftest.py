"""Fixtures for every suite. Unit tests use none of them, so they never start the stack;
integration, e2e and browser tests start the real one (tests/support/infra.py)."""

import os

import pytest
from hypothesis import settings as hypothesis_settings

from deploy.local.layout import Layout
from deploy.local.services import stack_env
from tests.support.infra import prometheus, scratch_dsn, scratch_topic, settings, stack
from tests.support.platform import platform

# Before any test module reads its settings: the stack where IMT_KAFKA_PORT and the
# like put it, as the services see it (unless set explicitly).
for _name, _value in stack_env(Layout.from_env()).items():
    os.environ.setdefault(_name, _value)

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
