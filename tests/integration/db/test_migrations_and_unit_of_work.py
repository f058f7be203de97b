"""Plain-SQL migrations and the unit of work on real PostgreSQL."""

import asyncio
from pathlib import Path

import asyncpg
import pytest

from shared.db import MigrationChanged, UnitOfWork, apply_migrations, create_pool, migration_files


def _write(folder: Path, name: str, sql: str) -> None:
    (folder / name).write_text(sql)


async def test_each_migration_runs_once_in_order_even_with_concurrent_migrators(
    scratch_dsn: str, tmp_path: Path
) -> None:
    _write(tmp_path, "001_repairs.sql", "CREATE TABLE repairs (id int PRIMARY KEY);")
    _write(tmp_path, "002_status.sql", "ALTER TABLE repairs ADD COLUMN status text;")
    conns = [await asyncpg.connect(scratch_dsn) for _ in range(3)]
    try:
        results = await asyncio.gather(
            *(apply_migrations(c, migration_files("svc", tmp_path)) for c in conns)
        )
        columns = await conns[0].fetch(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'repairs'"
            " ORDER BY ordinal_position"
        )
    finally:
        for conn in conns:
            await conn.close()
    assert sorted(map(len, results)) == [0, 0, 2]  # one migrator did the work
    assert [c["column_name"] for c in columns] == ["id", "status"]


async def test_an_edited_applied_migration_is_refused(scratch_dsn: str, tmp_path: Path) -> None:
    _write(tmp_path, "001_repairs.sql", "CREATE TABLE repairs (id int PRIMARY KEY);")
    conn = await asyncpg.connect(scratch_dsn)
    try:
        await apply_migrations(conn, migration_files("svc", tmp_path))
        _write(tmp_path, "001_repairs.sql", "CREATE TABLE repairs (id bigint PRIMARY KEY);")
        with pytest.raises(MigrationChanged, match="svc/001_repairs"):
            await apply_migrations(conn, migration_files("svc", tmp_path))
    finally:
        await conn.close()


async def test_a_failing_migration_leaves_nothing_behind(scratch_dsn: str, tmp_path: Path) -> None:
    _write(tmp_path, "001_half.sql", "CREATE TABLE half (id int); SELECT no_such_function();")
    conn = await asyncpg.connect(scratch_dsn)
    try:
        with pytest.raises(asyncpg.UndefinedFunctionError):
            await apply_migrations(conn, migration_files("svc", tmp_path))
        assert await conn.fetchval("SELECT to_regclass('half')") is None
        assert not await conn.fetchval(
            "SELECT count(*) FROM schema_migrations WHERE version LIKE 'svc/%'"
        )
    finally:
        await conn.close()


async def test_a_no_transaction_migration_builds_its_indexes_concurrently_and_once(
    scratch_dsn: str, tmp_path: Path
) -> None:
    """CREATE INDEX CONCURRENTLY cannot run in a transaction: such a file runs statement
    by statement, and a run stopped before its ledger row runs again without harm."""
    _write(tmp_path, "001_repairs.sql", "CREATE TABLE repairs (id int, status text);")
    _write(
        tmp_path,
        "002_by_status.sql",
        "-- no transaction: a large table's writers must not wait for the build.\n\n"
        "-- by status; ends with a semicolon\n"
        "DROP INDEX CONCURRENTLY IF EXISTS repairs_status;\n"
        "CREATE INDEX CONCURRENTLY repairs_status ON repairs (status);\n",
    )
    conn = await asyncpg.connect(scratch_dsn)
    try:
        assert await apply_migrations(conn, migration_files("svc", tmp_path)) == [
            "svc/001_repairs",
            "svc/002_by_status",
        ]
        # Stopped after the build, before the ledger row: the next start builds it again.
        await conn.execute("DELETE FROM schema_migrations WHERE version = 'svc/002_by_status'")
        assert await apply_migrations(conn, migration_files("svc", tmp_path)) == [
            "svc/002_by_status"
        ]
        valid = await conn.fetchval(
            "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = 'repairs_status'::regclass"
        )
    finally:
        await conn.close()
    assert valid is True


async def test_concurrent_migrators_wait_for_one_building_an_index_concurrently(
    scratch_dsn: str, tmp_path: Path
) -> None:
    """Every process of a service migrates as it starts: those waiting for the one
    migrating must not hold a snapshot, which CREATE INDEX CONCURRENTLY waits for (a
    deadlock while they waited inside pg_advisory_lock)."""
    _write(tmp_path, "001_repairs.sql", "CREATE TABLE repairs (id int, status text);")
    _write(
        tmp_path,
        "002_by_status.sql",
        "-- no transaction: writers must not wait.\n"
        "DROP INDEX CONCURRENTLY IF EXISTS repairs_status;\n"
        "CREATE INDEX CONCURRENTLY repairs_status ON repairs (status);\n",
    )
    conns = [await asyncpg.connect(scratch_dsn) for _ in range(3)]
    try:
        results = await asyncio.gather(
            *(apply_migrations(c, migration_files("svc", tmp_path)) for c in conns)
        )
        valid = await conns[0].fetchval(
            "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = 'repairs_status'::regclass"
        )
    finally:
        for conn in conns:
            await conn.close()
    assert sorted(map(len, results)) == [0, 0, 2]
    assert valid is True


async def test_the_unit_of_work_rolls_back_unless_committed(scratch_dsn: str) -> None:
    pool = await create_pool(scratch_dsn, max_size=2)
    try:
        async with pool.acquire() as conn:
            await conn.execute("CREATE TABLE notes (text text)")
        async with UnitOfWork(pool) as uow:
            await uow.conn.execute("INSERT INTO notes VALUES ('forgotten')")
        async with UnitOfWork(pool) as uow:
            await uow.conn.execute("INSERT INTO notes VALUES ('kept')")
            await uow.commit()
        with pytest.raises(RuntimeError, match="boom"):
            await _fail_inside_a_unit_of_work(pool)
        async with pool.acquire() as conn:
            kept = await conn.fetch("SELECT text FROM notes")
    finally:
        await pool.close()
    assert [r["text"] for r in kept] == ["kept"]


async def _fail_inside_a_unit_of_work(pool: asyncpg.Pool) -> None:
    async with UnitOfWork(pool) as uow:
        await uow.conn.execute("INSERT INTO notes VALUES ('failed')")
        raise RuntimeError("boom")
