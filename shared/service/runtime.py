"""A service process's runtime: its own database (migrated), the vault, a producer.

Opened once in the service's ``bootstrap``; every handler receives what it needs from
it. Nothing here keeps state that a restart or a second replica would break.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaProducer

from shared.bus.dead_letters import letter_producer
from shared.config import PlatformSettings
from shared.databases import VAULT_DATABASE
from shared.db.pool import service_pool
from shared.db.prepare import migrate_service_database, migrate_vault_database
from shared.observability import Metrics
from shared.vault import Vault


@dataclass
class Runtime:
    settings: PlatformSettings
    database: str
    pool: asyncpg.Pool
    metrics: Metrics
    vault: Vault | None = None
    vault_pool: asyncpg.Pool | None = None
    producer: AIOKafkaProducer | None = None

    async def close(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
        if self.vault is not None:
            await self.vault.close()
        if self.vault_pool is not None:
            await self.vault_pool.close()
        await self.pool.close()


async def open_runtime(
    settings: PlatformSettings,
    database: str,
    migrations: Path | None,
    *,
    with_vault: bool = True,
    with_producer: bool = False,
    pool_size: int = 10,
) -> Runtime:
    """Connect (waiting for the servers), migrate, and start what the process needs."""
    pool = await service_pool(settings, database, max_size=pool_size)
    await migrate_service_database(pool, database, migrations)
    runtime = Runtime(settings, database, pool, Metrics(settings.service_name))
    if with_vault:
        runtime.vault_pool = await service_pool(settings, VAULT_DATABASE, max_size=pool_size)
        await migrate_vault_database(runtime.vault_pool)
        runtime.vault = await Vault.connect(settings, runtime.vault_pool)
    if with_producer:
        runtime.producer = letter_producer(settings)  # its consumers' dead letters too
        await runtime.producer.start()
    return runtime
