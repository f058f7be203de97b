"""A unit of work: one connection, one transaction, rolled back unless committed."""

from __future__ import annotations

from types import TracebackType

import asyncpg
from asyncpg.pool import PoolConnectionProxy


class UnitOfWork:
    """``async with UnitOfWork(pool) as uow: ...; await uow.commit()``.

    Everything written through ``uow.conn`` (state, outbox rows, processed-event marks)
    commits together or not at all.
    """

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._conn: PoolConnectionProxy[asyncpg.Record] | None = None
        self._tx: asyncpg.transaction.Transaction | None = None
        self._committed = False

    @property
    def conn(self) -> PoolConnectionProxy[asyncpg.Record]:
        if self._conn is None:
            raise RuntimeError("unit of work used outside its 'async with' block")
        return self._conn

    async def __aenter__(self) -> UnitOfWork:
        self._conn = await self._pool.acquire()
        self._tx = self._conn.transaction()
        await self._tx.start()
        return self

    async def commit(self) -> None:
        assert self._tx is not None
        await self._tx.commit()
        self._committed = True

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if not self._committed and self._tx is not None:
                await self._tx.rollback()
        finally:
            if self._conn is not None:
                await self._pool.release(self._conn)
            self._conn = None
