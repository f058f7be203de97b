"""Retention (a day's hour windows go with the day, never before it) and erasure, and
what each leaves on the compacted trends topic."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from services.analytics import handlers, store
from shared.db.pool import Connection
from shared.events import decode_envelope
from shared.events.catalogue.analytics import trend_window_key


async def _add(conn: Connection, grain: str, start: datetime, length: timedelta) -> None:
    await conn.execute(
        "INSERT INTO trend_windows VALUES ('s.example', $1, $2, $3, 1, 1)",
        grain, start, start + length,
    )  # fmt: skip
    await conn.execute(
        "INSERT INTO trend_cells VALUES ('s.example', $1, $2, 'total', '', 20, 15)", grain, start
    )


async def test_a_days_hours_are_kept_exactly_as_long_as_the_day(pool: asyncpg.Pool) -> None:
    age = timedelta(days=3)
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    expired, kept = today - timedelta(days=5), today - timedelta(days=3)
    async with pool.acquire() as conn:
        for day in (expired, kept):
            await _add(conn, "day", day, timedelta(days=1))
            for hour in range(24):
                await _add(conn, "hour", day + timedelta(hours=hour), timedelta(hours=1))
        removed = await handlers.forget_old(conn, timedelta(hours=48), {"hour": age, "day": age})
        left = await conn.fetch(
            "SELECT grain, date_trunc('day', window_start, 'UTC') AS day, count(*) AS n "
            "FROM trend_windows GROUP BY 1, 2 ORDER BY 1"
        )
        cells = await conn.fetchval("SELECT count(*) FROM trend_cells")
        tombstones = await conn.fetch(
            "SELECT convert_from(key, 'UTF8') AS key FROM bus_outbox"
            " WHERE topic = 'analytics.trends' AND value IS NULL"
        )
    # The day that ended more than 3 days ago goes with all its hours; the next one,
    # ended less than 3 days ago, stays whole: its first hours (ended long before 3
    # days ago) too, or its release could no longer be checked against them.
    assert [(r["grain"], r["day"], r["n"]) for r in left] == [("day", kept, 1), ("hour", kept, 24)]
    assert removed["trend_windows.hour"] == 24
    assert removed["trend_windows.day"] == 1
    assert cells == 25
    # Each forgotten window leaves the compacted trends topic too (it had been published).
    assert removed["tombstones"] == 25
    hours = {trend_window_key("s.example", "hour", expired + timedelta(hours=h)) for h in range(24)}
    assert {r["key"] for r in tombstones} == {trend_window_key("s.example", "day", expired), *hours}


async def test_a_visitor_set_stays_while_its_window_still_takes_late_visits(
    pool: asyncpg.Pool,
) -> None:
    """Visits count while they are younger than the age: a day's set must outlive its
    window's end by that much, or a late visit of a known visitor counts as a new one."""
    age = timedelta(hours=48)
    now = datetime.now(UTC)
    day_still_taking = now - age - timedelta(hours=12)  # ended 12 h after now - age
    day_done = now - age - timedelta(days=1, hours=1)  # ended an hour before now - age
    async with pool.acquire() as conn:
        for start in (day_still_taking, day_done):
            await conn.execute(
                "INSERT INTO trend_cell_visitors VALUES ('s.example', 'day', $1, 'page', '/',"
                " 'v1')",
                start,
            )
        removed = await handlers.forget_old(conn, age, {})
        left = await conn.fetch("SELECT window_start FROM trend_cell_visitors")
    assert removed["visitor_sets"] == 1
    assert [r["window_start"] for r in left] == [day_still_taking]


async def test_an_erased_cell_is_republished_away_from_the_trends_topic(
    pool: asyncpg.Pool,
) -> None:
    """A cell naming an erased subject leaves the database, and the window it was
    published in is published again without it (the compacted topic keeps the latest)."""
    subject = uuid.uuid4()
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    async with pool.acquire() as conn:
        await _add(conn, "hour", start, timedelta(hours=1))
        await conn.execute(
            "INSERT INTO trend_cells VALUES ('s.example', 'hour', $1, 'page', $2, 20, 15),"
            " ('s.example', 'hour', $1, 'page', '/shop', 5, 5)",
            start,
            f"/u/{subject}",
        )
        async with conn.transaction():
            erased = await store.erase_subject_traces(conn, subject)
    assert (erased["trend_cells"], erased["republished_windows"]) == (1, 1)
    assert await handlers.publish_closed_windows(pool, timedelta(0)) == 1
    value = await pool.fetchval(
        "SELECT value FROM bus_outbox WHERE topic = 'analytics.trends' AND key = $1",
        trend_window_key("s.example", "hour", start).encode(),
    )
    window = decode_envelope(value).data
    assert sorted(c["value"] for c in window["cells"]) == [store.ERASED, "/shop"]
    assert str(subject) not in str(window)
    assert window["revision"] == 2


async def test_cells_naming_an_erased_subject_merge_into_the_erased_cell(
    pool: asyncpg.Pool,
) -> None:
    """Merged, not deleted: the page cells still add up to the window's total, so no
    hidden count can be read off by subtraction; the merged cell counts no more unique
    visitors than it surely holds."""
    subject = uuid.uuid4()
    start = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    mine, also = f"/u/{subject}", f"/u/{subject}/edit"
    async with pool.acquire() as conn:
        await _add(conn, "hour", start, timedelta(hours=1))  # total: 20 visits
        await conn.executemany(
            "INSERT INTO trend_cells VALUES ('s.example', 'hour', $1, 'page', $2, $3, $4)",
            [(start, mine, 6, 4), (start, also, 4, 3), (start, store.ERASED, 2, 2),
             (start, "/shop", 8, 6)],
        )  # fmt: skip
        await conn.executemany(
            "INSERT INTO trend_cell_visitors VALUES ('s.example', 'hour', $1, 'page', $2, $3)",
            [(start, mine, "v1"), (start, mine, "v2"), (start, also, "v2"),
             (start, store.ERASED, "v9")],
        )  # fmt: skip
        await conn.executemany(
            "INSERT INTO trend_cell_load_times VALUES ('s.example', 'hour', $1, 'page', $2, 3, $3)",
            [(start, mine, 5), (start, also, 2)],
        )
        async with conn.transaction():
            erased = await store.erase_subject_traces(conn, subject)
        cells = {
            r["value"]: (r["visits"], r["unique_visitors"])
            for r in await conn.fetch("SELECT * FROM trend_cells WHERE dimension = 'page'")
        }
        visitors = await conn.fetch("SELECT value, visitor_hash FROM trend_cell_visitors")
        load_times = await conn.fetch("SELECT value, bucket, count FROM trend_cell_load_times")
    assert erased == {
        "trend_cell_load_times": 2,
        "trend_cell_visitors": 3,
        "trend_cells": 2,
        "republished_windows": 1,
    }
    assert cells == {"/shop": (8, 6), store.ERASED: (12, 4)}
    assert sum(visits for visits, _ in cells.values()) == 20  # the window's total
    assert sorted(tuple(r) for r in visitors) == [(store.ERASED, h) for h in ("v1", "v2", "v9")]
    assert [tuple(r) for r in load_times] == [(store.ERASED, 3, 7)]


async def test_release_receipts_are_kept_for_their_period_only(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn:
        for days_ago in (800, 10):
            await conn.execute(
                "INSERT INTO trend_releases (id, audience, site, grain, from_time, to_time, k,"
                " windows, cells_published, cells_suppressed, released_at)"
                " VALUES ($1, 'public', 's.example', 'day', now(), now(), 11, 1, 1, 0,"
                " now() - make_interval(days => $2))",
                uuid.uuid4(),
                days_ago,
            )
        removed = await handlers.forget_old(conn, timedelta(hours=48), {}, timedelta(days=730))
        left = await conn.fetchval("SELECT count(*) FROM trend_releases")
    assert (removed["releases"], left) == (1, 1)


async def test_a_window_never_published_leaves_no_tombstone_and_is_not_published_for_an_erasure(
    pool: asyncpg.Pool,
) -> None:
    subject = uuid.uuid4()
    old = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=10)
    recent = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=3)
    async with pool.acquire() as conn:
        for start in (old, recent):
            await conn.execute(
                "INSERT INTO trend_windows VALUES ('s.example', 'hour', $1, $2, 1, 0)",
                start,
                start + timedelta(hours=1),
            )
        await conn.execute(
            "INSERT INTO trend_cells VALUES ('s.example', 'hour', $1, 'page', $2, 3, 3)",
            recent,
            f"/u/{subject}",
        )
        removed = await handlers.forget_old(conn, timedelta(hours=48), {"hour": timedelta(days=3)})
        erased = await store.erase_subject_traces(conn, subject)
        tombstones = await conn.fetchval(
            "SELECT count(*) FROM bus_outbox WHERE topic = 'analytics.trends'"
        )
        revision = await conn.fetchval(
            "SELECT revision FROM trend_windows WHERE window_start = $1", recent
        )
    assert (removed["trend_windows.hour"], removed["tombstones"], tombstones) == (1, 0, 0)
    assert (erased["trend_cells"], erased["republished_windows"], revision) == (1, 0, 1)
