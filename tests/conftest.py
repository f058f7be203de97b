"""Fixtures for every suite. Unit tests use none of them, so they never start the stack;
integration, e2e and browser tests start the real one (tests/support/infra.py)."""

from tests.support.infra import scratch_dsn, scratch_topic, settings, stack
from tests.support.platform import platform

__all__ = ["platform", "scratch_dsn", "scratch_topic", "settings", "stack"]
