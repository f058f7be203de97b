from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.notifier.bootstrap import MIGRATIONS
from services.notifier.config import NotifierSettings
from shared.db import create_pool
from shared.db.migrations import apply_migrations, migration_files
from shared.db.prepare import migrate_vault_database
from shared.vault import Vault


@pytest.fixture
async def pool(scratch_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A scratch notifier database (its vault tables in it too)."""
    pool = await create_pool(scratch_dsn, max_size=10)
    async with pool.acquire() as conn:
        await apply_migrations(conn, migration_files("notifier", MIGRATIONS))
    await migrate_vault_database(pool)
    yield pool
    await pool.close()


@pytest.fixture
async def vault(pool: asyncpg.Pool) -> AsyncIterator[Vault]:
    """The vault, in the scratch database (its tables are there)."""
    opened = await Vault.connect(NotifierSettings(environment="test"), pool)
    yield opened
    await opened.close()
