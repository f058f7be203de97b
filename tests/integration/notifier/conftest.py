from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.notifier.bootstrap import MIGRATIONS
from shared.db import create_pool
from shared.db.migrations import apply_migrations, migration_files
from shared.db.prepare import migrate_vault_database


@pytest.fixture
async def pool(scratch_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A scratch notifier database (its vault tables in it too)."""
    pool = await create_pool(scratch_dsn, max_size=10)
    async with pool.acquire() as conn:
        await apply_migrations(conn, migration_files("notifier", MIGRATIONS))
    await migrate_vault_database(pool)
    yield pool
    await pool.close()
