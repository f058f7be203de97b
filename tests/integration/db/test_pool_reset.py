"""Pooled connections skip asyncpg's reset query unless they listened (shared.db.pool)."""

from collections.abc import AsyncIterator

import asyncpg
import pytest

from shared.db import create_pool


@pytest.fixture
async def one_connection(scratch_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    """A pool of exactly one connection: every acquire gets the same session back."""
    pool = await create_pool(scratch_dsn, min_size=1, max_size=1)
    yield pool
    await pool.close()


async def test_a_connection_that_listened_comes_back_listening_to_nothing(
    one_connection: asyncpg.Pool,
) -> None:
    conn = await one_connection.acquire()
    await conn.add_listener("imt_reset_probe", lambda *_: None)
    assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 1
    # Released still listening (the platform's listeners UNLISTEN first; asyncpg warns).
    with pytest.warns(asyncpg.InterfaceWarning, match="active notification listener"):
        await one_connection.release(conn)
    async with one_connection.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM pg_listening_channels()") == 0


async def test_a_clean_session_is_handed_back_without_a_reset(
    one_connection: asyncpg.Pool,
) -> None:
    # What the skipped RESET ALL would have undone: a session-level setting persists.
    # This is why the platform's code sets only SET LOCAL on pooled connections.
    async with one_connection.acquire() as conn:
        backend = await conn.fetchval("SELECT pg_backend_pid()")
        await conn.execute("SELECT set_config('imt.reset_probe', 'kept', false)")
    async with one_connection.acquire() as conn:
        assert await conn.fetchval("SELECT pg_backend_pid()") == backend
        assert await conn.fetchval("SELECT current_setting('imt.reset_probe', true)") == "kept"


async def test_a_transaction_left_open_is_still_rolled_back(
    one_connection: asyncpg.Pool,
) -> None:
    async with one_connection.acquire() as conn:
        await conn.execute("CREATE TABLE IF NOT EXISTS reset_probe (n int)")
        transaction = conn.transaction()
        await transaction.start()
        await conn.execute("INSERT INTO reset_probe VALUES (1)")
    async with one_connection.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM reset_probe") == 0
