"""A day keeps at most the cap's labels per dimension, its hours and minutes with it; the
rest are folded into "(other)" on real PostgreSQL: every sum stays exact, and a label
keeps its place (its own cell, or "(other)") under redelivery, erasure and concurrent
workers."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from services.analytics import handlers, store, worker
from services.analytics.config import AnalyticsSettings
from services.analytics.domain.windows import OTHER
from shared.events.catalogue.analytics import VisitRecorded

SITE = "imt.example"
CAP = 3
SETTINGS = AnalyticsSettings(analytics_max_labels_per_window=CAP)


# All in one minute, well within the lateness: the same minute, hour and day windows.
NOW = datetime.now(UTC).replace(second=30, microsecond=0) - timedelta(minutes=5)


def _visits(page: str, n: int = 1, visitor: str = "a") -> list[VisitRecorded]:
    return [
        VisitRecorded(
            beacon_id=uuid.uuid4(),
            visitor_hash=visitor * 32,
            site=SITE,
            page=page,
            device_class="desktop",
            load_time_ms=100,
            occurred_at=NOW,
        )
        for _ in range(n)
    ]


async def _pages(pool: asyncpg.Pool) -> dict[str, dict[str, tuple[int, int]]]:
    """Per grain: each page label's (visits, unique visitors)."""
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT grain, value, visits, unique_visitors FROM trend_cells"
            " WHERE site = $1 AND dimension = 'page'",
            SITE,
        )
    pages: dict[str, dict[str, tuple[int, int]]] = {}
    for r in rows:
        pages.setdefault(r["grain"], {})[r["value"]] = (r["visits"], r["unique_visitors"])
    return pages


async def _assert_sums_exact(pool: asyncpg.Pool) -> None:
    """Every dimension of every window adds up to its total, visits and visitor sets."""
    async with pool.acquire() as conn:
        wrong = await conn.fetch(
            """
            SELECT t.grain, c.dimension, t.visits, sum(c.visits) AS summed
            FROM trend_cells t JOIN trend_cells c USING (site, grain, window_start)
            WHERE t.dimension = 'total' AND c.dimension <> 'total'
            GROUP BY t.grain, c.dimension, t.visits HAVING sum(c.visits) <> t.visits
            """
        )
        stale = await conn.fetch(
            """
            SELECT c.grain, c.dimension, c.value FROM trend_cells c
            WHERE c.unique_visitors <> (
                SELECT count(*) FROM trend_cell_visitors v
                WHERE (v.site, v.grain, v.window_start, v.dimension, v.value)
                    = (c.site, c.grain, c.window_start, c.dimension, c.value))
            """
        )
    assert wrong == []
    assert stale == []  # "(other)" counts the distinct visitors folded into it, exactly


async def test_labels_beyond_the_cap_are_folded_into_other_and_stay_there(
    pool: asyncpg.Pool,
) -> None:
    first = _visits("/a", 3) + _visits("/b", 2) + _visits("/c", 2, "b") + _visits("/d")
    first += _visits("/e", visitor="c") + _visits("/f", visitor="c")
    await worker._count(pool, first, SETTINGS)
    pages = await _pages(pool)
    # The three most visited pages keep cells of their own; the others are one cell, in
    # the day and in its hour and minute alike.
    expected = {"/a": (3, 1), "/b": (2, 1), "/c": (2, 1), OTHER: (3, 2)}
    assert pages == {"minute": expected, "hour": expected, "day": expected}
    await _assert_sums_exact(pool)

    # Redelivered (the same beacon ids): nothing counts twice.
    await worker._count(pool, first, SETTINGS)
    assert await _pages(pool) == {"minute": expected, "hour": expected, "day": expected}

    # Later visits: /a keeps its cell, /d stays folded, and a new page is folded too.
    await worker._count(pool, _visits("/a") + _visits("/d", 5, "d") + _visits("/g"), SETTINGS)
    expected = {"/a": (4, 1), "/b": (2, 1), "/c": (2, 1), OTHER: (9, 3)}
    assert (await _pages(pool))["day"] == expected
    await _assert_sums_exact(pool)


async def test_a_label_folded_once_stays_folded_though_an_erasure_makes_room(
    pool: asyncpg.Pool,
) -> None:
    subject = uuid.uuid4()
    # Two of the three pages hold the subject's id: erasure merges them into one cell,
    # "(erased)", so the day then holds two labels, under the cap of three.
    first = _visits(f"/u/{subject}/a", 3) + _visits(f"/u/{subject}/b", 3) + _visits("/c", 2)
    await worker._count(pool, first + _visits("/d"), SETTINGS)
    async with pool.acquire() as conn, conn.transaction():
        await store.erase_subject_traces(conn, subject)
    assert set((await _pages(pool))["day"]) == {"(erased)", "/c", OTHER}
    # /d was folded once: it is folded again, though there is room now; so is a new page.
    await worker._count(pool, _visits("/d", 2) + _visits("/h"), SETTINGS)
    day = (await _pages(pool))["day"]
    assert set(day) == {"(erased)", "/c", OTHER}
    assert day[OTHER] == (4, 1)
    await _assert_sums_exact(pool)


async def test_concurrent_workers_decide_in_turn(pool: asyncpg.Pool) -> None:
    """A worker counting the same day waits for the one before it, and folds from what
    that one committed: a day never holds more labels than the cap from a race."""
    too_old = datetime.now(UTC) - timedelta(hours=47)
    async with pool.acquire() as first:
        transaction = first.transaction()
        await transaction.start()
        await handlers.aggregate(first, _visits("/a") + _visits("/b") + _visits("/c"),
                                 too_old, cap=CAP)  # fmt: skip

        async def second() -> None:
            async with pool.acquire() as conn, conn.transaction():
                await handlers.aggregate(conn, _visits("/d"), too_old, cap=CAP)

        other = asyncio.create_task(second())
        await asyncio.sleep(0.5)
        assert not other.done()  # waiting for the first worker's day
        await transaction.commit()
    await asyncio.wait_for(other, 10)
    assert set((await _pages(pool))["day"]) == {"/a", "/b", "/c", OTHER}
    await _assert_sums_exact(pool)
