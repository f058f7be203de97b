"""asyncpg pools that wait for the database instead of failing a fresh start."""

from __future__ import annotations

import asyncio
import json
import time
from typing import TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from shared.config import PlatformSettings

#: A connection of its own or one borrowed from a pool: every query function takes either.
Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy


async def _init_connection(conn: asyncpg.Connection) -> None:
    # jsonb columns in and out as Python objects, everywhere, the same way.
    await conn.set_type_codec("jsonb", encoder=json.dumps, decoder=json.loads, schema="pg_catalog")


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, wait_seconds: float = 60.0
) -> asyncpg.Pool:
    """A pool for ``dsn``, retrying while the server is still starting."""
    deadline = time.monotonic() + wait_seconds
    while True:
        try:
            pool = await asyncpg.create_pool(
                dsn, min_size=min_size, max_size=max_size, init=_init_connection
            )
        except (OSError, asyncpg.CannotConnectNowError, asyncpg.TooManyConnectionsError):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)
        else:
            assert pool is not None
            return pool


async def service_pool(
    settings: PlatformSettings, database: str, *, min_size: int = 1, max_size: int = 10
) -> asyncpg.Pool:
    """The pool of one service's own database."""
    return await create_pool(settings.database_dsn(database), min_size=min_size, max_size=max_size)
