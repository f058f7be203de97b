"""asyncpg pools that wait for the database instead of failing a fresh start."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

from shared.config import PlatformSettings

#: A connection of its own or one borrowed from a pool: every query function takes either.
Connection: TypeAlias = asyncpg.Connection | PoolConnectionProxy


class SessionTrackingConnection(asyncpg.Connection):
    """A pooled connection that skips asyncpg's reset query while its session is clean.

    On every release asyncpg sends one more statement (pg_advisory_unlock_all, CLOSE ALL,
    UNLISTEN *, RESET ALL): a round trip costing about a tenth of a simple request's
    CPU. The platform leaves no other session state on a pooled connection: settings
    are ``SET LOCAL``, the migrations' advisory lock is released where it is taken, the
    relay's leader lock has a connection of its own, cursors end with their transaction,
    and asyncpg itself still rolls back a transaction left open. LISTEN is the one
    exception (the vault's shred listener borrows a pooled connection), so a connection
    that listened gets the full reset.
    """

    _listened = False

    async def add_listener(self, channel: str, callback: Any) -> None:
        self._listened = True
        await super().add_listener(channel, callback)

    def get_reset_query(self) -> str:
        if not self._listened:
            return ""
        self._listened = False
        query: str = super().get_reset_query()
        return query


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
                dsn,
                min_size=min_size,
                max_size=max_size,
                init=_init_connection,
                connection_class=SessionTrackingConnection,
                # Days are UTC days everywhere (date_trunc, date casts, intervals across a
                # clock change), whatever zone the server was initialised with.
                server_settings={"timezone": "UTC"},
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
