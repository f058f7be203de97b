"""Fixtures of the analytics end-to-end tests."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest

from tests.support.clock import seconds_to_clear_midnight

# Longer than any of these tests takes, with room for a slow run.
LONGEST_TEST = timedelta(minutes=4)


@pytest.fixture(autouse=True)
async def _not_across_midnight() -> None:
    """A test counting visits per day must not straddle two days: at midnight the day
    window and the visitor salt change by design, and the counts split."""
    await asyncio.sleep(seconds_to_clear_midnight(datetime.now(UTC), LONGEST_TEST))
