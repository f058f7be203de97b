"""Vaults on a scratch database, as the processes of one service would have them."""

from collections.abc import AsyncIterator

import asyncpg
import pytest

from shared.config import PlatformSettings
from shared.db import create_pool
from shared.db.prepare import migrate_vault_database
from shared.vault import Vault


@pytest.fixture
async def vault_pool(scratch_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(scratch_dsn, max_size=6)
    await migrate_vault_database(pool)
    yield pool
    await pool.close()


@pytest.fixture
async def vaults(
    settings: PlatformSettings, vault_pool: asyncpg.Pool
) -> AsyncIterator[tuple[Vault, Vault]]:
    """Two vaults on one database: two processes (an API and a worker, say)."""
    first = await Vault.connect(settings, vault_pool)
    second = await Vault.connect(settings, vault_pool)
    yield first, second
    await first.close()
    await second.close()
