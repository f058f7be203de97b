"""Waiting, in a test, until transactions under way have come to wait for a lock."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest


async def lock_waiters(pool: asyncpg.Pool, count: int, timeout: float = 30.0) -> None:
    """Until ``count`` backends of the pool's database wait for a lock of any kind (a
    row's, a table's, another transaction's end); fails after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        waiting = await pool.fetchval(
            "SELECT count(DISTINCT l.pid) FROM pg_locks l JOIN pg_stat_activity a"
            " ON a.pid = l.pid WHERE NOT l.granted AND a.datname = current_database()"
        )
        if waiting >= count:
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"{count} backends never came to wait for a lock")
