from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.accounts.bootstrap import DATABASE, MIGRATIONS
from shared.db import create_pool
from shared.db.prepare import migrate_service_database


@pytest.fixture
async def pool(scratch_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A scratch database with the accounts schema (and the bus tables)."""
    pool = await create_pool(scratch_dsn, max_size=8)
    await migrate_service_database(pool, DATABASE, MIGRATIONS)
    yield pool
    await pool.close()
