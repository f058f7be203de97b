"""A scratch database with the analytics service's schema, for each test that asks."""

from __future__ import annotations

from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.analytics.bootstrap import MIGRATIONS
from shared.db import create_pool
from shared.db.migrations import apply_migrations, migration_files


@pytest.fixture
async def pool(scratch_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(scratch_dsn, max_size=4)
    async with pool.acquire() as conn:
        await apply_migrations(conn, migration_files("analytics", MIGRATIONS))
    yield pool
    await pool.close()
