"""Fixtures for every suite. Unit tests use none of them, so they never start the stack;
integration, e2e and browser tests start the real one (tests/support/infra.py)."""

from hypothesis import settings as hypothesis_settings

from tests.support.infra import prometheus, scratch_dsn, scratch_topic, settings, stack
from tests.support.platform import platform

# No per-example deadline: on a shared machine one slow example is a pause of the
# machine, not a finding (it would fail the property test with DeadlineExceeded).
hypothesis_settings.register_profile("shared-machine", deadline=None)
hypothesis_settings.load_profile("shared-machine")

__all__ = [
    "platform",
    "prometheus",
    "scratch_dsn",
    "scratch_topic",
    "settings",
    "stack",
]
