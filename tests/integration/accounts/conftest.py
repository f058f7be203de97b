from collections.abc import AsyncIterator

import asyncpg
import pytest

from services.accounts.bootstrap import DATABASE, MIGRATIONS
from services.accounts.context import Context
from shared.config import PlatformSettings
from shared.db import create_pool
from shared.db.prepare import migrate_service_database, migrate_vault_database
from shared.vault import Vault
from tests.integration.accounts.users import accounts_context


@pytest.fixture
async def pool(scratch_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A scratch database with the accounts schema (and the bus tables)."""
    pool = await create_pool(scratch_dsn, max_size=8)
    await migrate_service_database(pool, DATABASE, MIGRATIONS)
    yield pool
    await pool.close()


@pytest.fixture
async def vault(settings: PlatformSettings, pool: asyncpg.Pool) -> AsyncIterator[Vault]:
    await migrate_vault_database(pool)  # the vault's tables in the scratch database too
    vault = await Vault.connect(settings, pool)
    yield vault
    await vault.close()


@pytest.fixture
def ctx(settings: PlatformSettings, pool: asyncpg.Pool, vault: Vault) -> Context:
    """The context the routes run with, on the scratch database and its vault."""
    return accounts_context(settings, pool, vault)
