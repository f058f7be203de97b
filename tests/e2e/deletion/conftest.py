"""Fixtures of the deletion end-to-end tests.

The deletion worker started for these tests uses a 5-second grace period and short
retries, so a whole request runs in seconds (a worker already running with the 14-day
default, e.g. from ``make run``, would keep these requests in grace).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import httpx
import pytest

for name, value in {
    "IMT_DELETION_GRACE_SECONDS": "5",
    "IMT_DELETION_TICK_SECONDS": "0.2",
    "IMT_DELETION_RETRY_SECONDS": "2",
    "IMT_DELETION_STORE_TIMEOUT_SECONDS": "90",
    "IMT_DELETION_BACKUP_POLL_SECONDS": "1",
    "IMT_DELETION_VERIFY_LEASE_SECONDS": "10",
}.items():
    os.environ.setdefault(name, value)


@pytest.fixture
async def client(platform: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=platform, timeout=60) as c:
        yield c
