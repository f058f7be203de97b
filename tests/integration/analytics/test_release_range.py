"""A trends release over a range holding more windows than one answer takes is cut, and
says where, on the real tables: operators by the windows stored, partners and the public
by the range alone."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.analytics import handlers
from services.analytics.bootstrap import MIGRATIONS
from services.analytics.domain.release import keyed_noise
from shared.db import create_pool
from shared.db.migrations import apply_migrations, migration_files

LIMIT = 25
SITE = "s.example"
HOUR = timedelta(hours=1)
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=30)


@pytest.fixture
async def pool(scratch_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(scratch_dsn, max_size=2)
    async with pool.acquire() as conn:
        await apply_migrations(conn, migration_files("analytics", MIGRATIONS))
        # Thirty hour windows from the day's start, twenty visitors each.
        for i in range(30):
            start = DAY + i * HOUR
            await conn.execute(
                "INSERT INTO trend_windows VALUES ($1, 'hour', $2, $3, 1, 1)",
                SITE, start, start + HOUR,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO trend_cells VALUES ($1, 'hour', $2, 'total', '', 20, 20)", SITE, start
            )
    yield pool
    await pool.close()


def _request(k: int, start: datetime, end: datetime) -> handlers.ReleaseRequest:
    final = None if k <= 1 else DAY + timedelta(days=20)
    audience = "operator" if k <= 1 else "partner"
    return handlers.ReleaseRequest(audience, SITE, "hour", start, end, k, None, final)


async def _recorded(pool: asyncpg.Pool, receipt: handlers.Receipt) -> datetime:
    async with pool.acquire() as conn:
        to: datetime = await conn.fetchval(
            "SELECT to_time FROM trend_releases WHERE id = $1", receipt.release_id
        )
    return to


async def test_an_operators_release_stops_where_the_first_window_left_out_starts(
    pool: asyncpg.Pool,
) -> None:
    asked = DAY + timedelta(days=3)
    stored, _, receipt = await handlers.release_trends(
        pool, _request(1, DAY, asked), keyed_noise(b"t"), LIMIT
    )
    assert [w.window_start for w in stored] == [DAY + i * HOUR for i in range(LIMIT)]
    assert (receipt.truncated, receipt.end) == (True, DAY + LIMIT * HOUR)
    assert await _recorded(pool, receipt) == receipt.end
    stored, _, receipt = await handlers.release_trends(
        pool, _request(1, receipt.end, asked), keyed_noise(b"t"), LIMIT
    )
    assert [w.window_start for w in stored] == [DAY + i * HOUR for i in range(LIMIT, 30)]
    assert (receipt.truncated, receipt.end) == (False, asked)


async def test_a_threshold_release_stops_at_the_end_of_its_last_day(pool: asyncpg.Pool) -> None:
    # LIMIT windows: one day with its hours. The next day's six hours are left for later.
    asked = DAY + timedelta(days=3)
    stored, _, receipt = await handlers.release_trends(
        pool, _request(5, DAY + 7 * HOUR, asked), keyed_noise(b"t"), LIMIT
    )
    assert [w.window_start for w in stored] == [DAY + i * HOUR for i in range(7, 24)]
    assert (receipt.truncated, receipt.end) == (True, DAY + timedelta(days=1))
    assert await _recorded(pool, receipt) == receipt.end
