"""Bringing a database to its current schema before a process serves anything."""

from __future__ import annotations

from pathlib import Path

import asyncpg

from shared.db.migrations import apply_migrations, migration_files

BUS_MIGRATIONS = Path(__file__).resolve().parent.parent / "bus" / "migrations"
VAULT_MIGRATIONS = Path(__file__).resolve().parent.parent / "vault" / "migrations"


async def migrate_service_database(
    pool: asyncpg.Pool, service: str, own_migrations: Path | None
) -> list[str]:
    """The bus tables every service needs, then the service's own migrations."""
    sources = migration_files("bus", BUS_MIGRATIONS)
    if own_migrations is not None:
        sources += migration_files(service, own_migrations)
    async with pool.acquire() as conn:
        return await apply_migrations(conn, sources)


async def migrate_vault_database(pool: asyncpg.Pool) -> list[str]:
    async with pool.acquire() as conn:
        return await apply_migrations(conn, migration_files("vault", VAULT_MIGRATIONS))
