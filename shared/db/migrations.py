"""Plain-SQL migrations: each ``NNN_name.sql`` file runs once, in order, in a transaction.

A file whose first line is ``-- no transaction`` runs statement by statement outside
one (``CREATE INDEX CONCURRENTLY`` on a large table, which must not block its writers
while it builds). Its statements must be safe to run again: a crash before the ledger
row leaves them done, or half done (an invalid index: drop it first, ``IF EXISTS``).

A service's database takes the shared migrations first (the bus tables every service
needs), then its own ``migrations/`` folder. Applied files are recorded in
``schema_migrations`` under a namespaced version such as ``bus/001_outbox``.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable
from pathlib import Path

from shared.db.pool import Connection

_LOCK_ID = 0x1DB_1A7E  # one migrator per database at a time

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version    text PRIMARY KEY,
    checksum   text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationChanged(RuntimeError):
    """An applied migration's file changed afterwards: never edit applied migrations."""


def migration_files(namespace: str, folder: Path) -> list[tuple[str, Path]]:
    """``(version, path)`` of every SQL file in a folder, in order."""
    return [(f"{namespace}/{p.stem}", p) for p in sorted(folder.glob("*.sql"))]


async def apply_migrations(conn: Connection, sources: Iterable[tuple[str, Path]]) -> list[str]:
    """Apply each source not yet applied; return the versions applied now."""
    await _take_lock(conn)
    try:
        await conn.execute(_CREATE_LEDGER)
        done = {
            r["version"]: r["checksum"]
            for r in await conn.fetch("SELECT version, checksum FROM schema_migrations")
        }
        applied = []
        for version, path in sources:
            if await _apply_one(conn, version, path, done):
                applied.append(version)
        return applied
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", _LOCK_ID)


async def _take_lock(conn: Connection) -> None:
    """One migrator at a time. Polled, not waited for: a session waiting inside
    ``pg_advisory_lock`` holds a snapshot all the while, and ``CREATE INDEX
    CONCURRENTLY`` in the migrator that holds the lock waits for every such snapshot to
    end, so the two would deadlock (every process of a service migrates as it starts)."""
    while True:
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LOCK_ID):
            return
        await asyncio.sleep(_LOCK_POLL_SECONDS)


_LOCK_POLL_SECONDS = 0.2


async def _apply_one(conn: Connection, version: str, path: Path, done: dict[str, str]) -> bool:
    sql = path.read_text()  # noqa: ASYNC240 - small files, read once at start-up
    checksum = hashlib.sha256(sql.encode()).hexdigest()
    if version in done:
        if done[version] != checksum:
            raise MigrationChanged(f"{version} was applied with different content")
        return False
    if sql.startswith(NO_TRANSACTION):
        for statement in statements(sql):
            await conn.execute(statement)
        await conn.execute(
            "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)", version, checksum
        )
        return True
    async with conn.transaction():
        await conn.execute(sql)
        await conn.execute(
            "INSERT INTO schema_migrations (version, checksum) VALUES ($1, $2)", version, checksum
        )
    return True


NO_TRANSACTION = "-- no transaction"


def statements(sql: str) -> list[str]:
    """A no-transaction file's statements, each sent alone (several in one query string
    would run in one implicit transaction). Split at a semicolon that ends a line: such
    files hold plain DDL, with no function bodies or literals spanning lines."""
    parts = (part.strip() for part in sql.split(";\n"))
    return [p for p in parts if any(not line.startswith("--") for line in p.splitlines() if line)]
