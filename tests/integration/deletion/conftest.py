"""Fixtures shared by the deletion service's integration tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from services.deletion.config import DeletionSettings
from shared.config import PlatformSettings
from tests.integration.deletion.harness import scratch_topics


@pytest.fixture
async def suffix(settings: PlatformSettings) -> AsyncIterator[str]:
    """The suffix of this test's own scratch topics (created, then deleted)."""
    async with scratch_topics(DeletionSettings(environment="test")) as name:
        yield name
