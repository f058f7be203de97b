"""The analytics database's SQL: window cells, visitor sets, suppressed counts, releases."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from uuid import UUID

import asyncpg

from services.analytics.domain.windows import (
    GRAIN_LENGTH,
    BatchDeltas,
    CellDimension,
    CellKey,
    Profile,
    percentile,
)
from shared.db.pool import Connection
from shared.events.catalogue.analytics import WindowGrain

_CELL_COLS = "site, grain, window_start, dimension, value"
_UNNEST_CELL = "$1::text[], $2::text[], $3::timestamptz[], $4::text[], $5::text[]"


def _cell_arrays(cells: Sequence[CellKey]) -> list[list[object]]:
    return [
        [c.site for c in cells],
        [c.grain for c in cells],
        [c.window_start for c in cells],
        [c.dimension for c in cells],
        [c.value for c in cells],
    ]


# The labels of day windows: a few hundred rows per dimension at most (the label cap),
# by primary key.
_DAY_LABELS = """
SELECT site, window_start, dimension, value FROM trend_cells
WHERE grain = 'day' AND dimension <> 'total'
  AND (site, window_start) IN (SELECT * FROM unnest($1::text[], $2::timestamptz[]))
"""


async def day_labels(
    conn: Connection, days: set[tuple[str, datetime]]
) -> list[tuple[str, datetime, CellDimension, str]]:
    """(site, day, dimension, label) of every cell the given (site, day) windows hold."""
    ordered = sorted(days)
    rows = await conn.fetch(_DAY_LABELS, [d[0] for d in ordered], [d[1] for d in ordered])
    return [(r["site"], r["window_start"], r["dimension"], r["value"]) for r in rows]


async def apply_deltas(conn: Connection, deltas: BatchDeltas) -> None:
    """Add a batch's visits to its cells, in key order (concurrent workers never deadlock).

    One statement adds the visitor hashes to the cells' sets (each (profile, visitor)
    pair expanded to its 12 cells here, in the database) and the visits to the cells,
    with the unique visitors the set insert found new: one upsert per cell per batch.
    """
    pairs = sorted(deltas.profile_visitors)
    cells = sorted(deltas.visits)
    # Room to sort a batch's visitor rows (12 per pair) in memory, for this transaction.
    await conn.execute("SET LOCAL work_mem = '64MB'")
    await conn.execute(
        f"""
        WITH pairs AS (
            -- Byte order ("C"): the order of the keys under the database's C.UTF-8
            -- collation, and much faster to sort by.
            SELECT DISTINCT u.site COLLATE "C", g.grain COLLATE "C", g.window_start,
                   c.dimension COLLATE "C", c.value COLLATE "C", u.visitor COLLATE "C"
            FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::timestamptz[],
                        $5::text[], $6::text[], $7::text[], $8::text[])
                 AS u(site, minute, hour, day, page, referrer_host, device_class, visitor)
            CROSS JOIN LATERAL (VALUES ('minute', u.minute), ('hour', u.hour), ('day', u.day))
                 AS g(grain, window_start)
            CROSS JOIN LATERAL (VALUES ('total', ''), ('page', u.page),
                                       ('referrer_host', u.referrer_host),
                                       ('device_class', u.device_class))
                 AS c(dimension, value)
        ), added AS (
            INSERT INTO trend_cell_visitors ({_CELL_COLS}, visitor_hash)
            SELECT * FROM pairs ORDER BY 1, 2, 3, 4, 5, 6
            ON CONFLICT DO NOTHING
            RETURNING {_CELL_COLS}
        ), uniques AS (
            SELECT {_CELL_COLS}, count(*) AS n FROM added GROUP BY {_CELL_COLS}
        )
        INSERT INTO trend_cells ({_CELL_COLS}, visits, unique_visitors)
        SELECT v.site, v.grain, v.window_start, v.dimension, v.value, v.visits,
               coalesce(uniques.n, 0)
        FROM unnest($9::text[], $10::text[], $11::timestamptz[], $12::text[], $13::text[],
                    $14::bigint[]) WITH ORDINALITY
             AS v(site, grain, window_start, dimension, value, visits, position)
        LEFT JOIN uniques USING ({_CELL_COLS})
        ORDER BY v.position
        ON CONFLICT ({_CELL_COLS}) DO UPDATE SET
            visits = trend_cells.visits + EXCLUDED.visits,
            unique_visitors = trend_cells.unique_visitors + EXCLUDED.unique_visitors
        """,  # noqa: S608
        *([p[i] for p, _ in pairs] for i in range(len(Profile._fields))),
        [h for _, h in pairs],
        *_cell_arrays(cells),
        [deltas.visits[c] for c in cells],
    )
    if deltas.load_buckets:
        buckets = sorted(deltas.load_buckets)
        await conn.execute(
            f"""
            INSERT INTO trend_cell_load_times ({_CELL_COLS}, bucket, count)
            SELECT * FROM unnest({_UNNEST_CELL}, $6::smallint[], $7::bigint[])
            ON CONFLICT ({_CELL_COLS}, bucket) DO UPDATE SET
                count = trend_cell_load_times.count + EXCLUDED.count
            """,  # noqa: S608
            *_cell_arrays([c for c, _ in buckets]),
            [b for _, b in buckets],
            [deltas.load_buckets[key] for key in buckets],
        )
    salted = sorted((*window, salt) for window, salts in deltas.windows.items() for salt in salts)
    await conn.execute(
        """
        INSERT INTO trend_windows (site, grain, window_start, window_end, revision, salts)
        SELECT s, g, ws, ws + CASE g WHEN 'minute' THEN interval '1 minute'
                                     WHEN 'hour' THEN interval '1 hour'
                                     ELSE interval '1 day' END, 1, array_agg(salt ORDER BY salt)
        FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::text[]) AS u(s, g, ws, salt)
        GROUP BY s, g, ws
        ORDER BY s, g, ws
        ON CONFLICT (site, grain, window_start) DO UPDATE SET
            revision = trend_windows.revision + 1,
            salts = ARRAY(SELECT DISTINCT x FROM unnest(trend_windows.salts || EXCLUDED.salts) x
                          ORDER BY 1)
        """,
        [w[0] for w in salted],
        [w[1] for w in salted],
        [w[2] for w in salted],
        [w[3] for w in salted],
    )


@dataclass(frozen=True)
class StoredCell:
    dimension: str
    value: str
    visits: int
    unique_visitors: int
    load_time_p50_ms: float | None
    load_time_p95_ms: float | None


@dataclass(frozen=True)
class StoredWindow:
    site: str
    grain: WindowGrain
    window_start: datetime
    window_end: datetime
    revision: int
    total: StoredCell
    cells: list[StoredCell]
    salts: int = 1  # how many salts its visitors were hashed with (see trend_windows.salts)


async def read_windows(
    conn: Connection, site: str, grain: WindowGrain, start: datetime, end: datetime, limit: int
) -> list[StoredWindow]:
    """Windows of a site starting in [start, end), oldest first, with their cells."""
    windows = await conn.fetch(
        """
        SELECT site, grain, window_start, window_end, revision,
               greatest(cardinality(salts), 1) AS salts
        FROM trend_windows
        WHERE site = $1 AND grain = $2 AND window_start >= $3 AND window_start < $4
        ORDER BY window_start LIMIT $5
        """,
        site,
        grain,
        start,
        end,
        limit,
    )
    return await _with_cells(conn, windows)


async def _with_cells(conn: Connection, windows: Sequence[asyncpg.Record]) -> list[StoredWindow]:
    if not windows:
        return []
    keys = [(w["site"], w["grain"], w["window_start"]) for w in windows]
    args = ([k[0] for k in keys], [k[1] for k in keys], [k[2] for k in keys])
    cells = await conn.fetch(
        f"""
        SELECT {_CELL_COLS}, visits, unique_visitors FROM trend_cells
        WHERE (site, grain, window_start) IN (
            SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[]))
        """,  # noqa: S608
        *args,
    )
    loads = await conn.fetch(
        f"""
        SELECT {_CELL_COLS}, bucket, count FROM trend_cell_load_times
        WHERE (site, grain, window_start) IN (
            SELECT * FROM unnest($1::text[], $2::text[], $3::timestamptz[]))
        """,  # noqa: S608
        *args,
    )
    histograms: dict[tuple[object, ...], dict[int, int]] = {}
    for r in loads:
        key = (r["site"], r["grain"], r["window_start"], r["dimension"], r["value"])
        histograms.setdefault(key, {})[r["bucket"]] = r["count"]
    by_window: dict[tuple[object, ...], list[StoredCell]] = {}
    for r in cells:
        key = (r["site"], r["grain"], r["window_start"], r["dimension"], r["value"])
        histogram = histograms.get(key, {})
        cell = StoredCell(
            r["dimension"],
            r["value"],
            r["visits"],
            r["unique_visitors"],
            percentile(histogram, 0.5),
            percentile(histogram, 0.95),
        )
        by_window.setdefault(key[:3], []).append(cell)
    out = []
    for w in windows:
        all_cells = by_window.get((w["site"], w["grain"], w["window_start"]), [])
        total = next(
            (c for c in all_cells if c.dimension == "total"),
            StoredCell("total", "", 0, 0, None, None),
        )
        out.append(
            StoredWindow(
                w["site"],
                w["grain"],
                w["window_start"],
                w["window_end"],
                w["revision"],
                total,
                sorted(
                    (c for c in all_cells if c.dimension != "total"),
                    key=lambda c: (c.dimension, -c.visits, c.value),
                ),
                w.get("salts", 1),
            )
        )
    return out


async def windows_to_publish(
    conn: Connection, grace: timedelta, limit: int = 200
) -> list[StoredWindow]:
    """Closed windows changed since last published, locked for this transaction."""
    rows = await conn.fetch(
        """
        SELECT site, grain, window_start, window_end, revision FROM trend_windows
        WHERE revision > published_revision AND window_end <= now() - $1::interval
        ORDER BY window_end LIMIT $2
        FOR UPDATE SKIP LOCKED
        """,
        grace,
        limit,
    )
    return await _with_cells(conn, rows)


async def mark_published(conn: Connection, windows: Sequence[StoredWindow]) -> None:
    await conn.execute(
        """
        UPDATE trend_windows t SET published_revision = u.r
        FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::bigint[]) AS u(s, g, ws, r)
        WHERE t.site = u.s AND t.grain = u.g AND t.window_start = u.ws
        """,
        [w.site for w in windows],
        [w.grain for w in windows],
        [w.window_start for w in windows],
        [w.revision for w in windows],
    )


async def count_suppressed(conn: Connection, day: date, signal: str, visits: int = 1) -> None:
    await conn.execute(
        """
        INSERT INTO suppressed_visits (day, signal, count) VALUES ($1, $2, $3)
        ON CONFLICT (day, signal) DO UPDATE SET count = suppressed_visits.count + $3
        """,
        day,
        signal,
        visits,
    )


async def suppressed_counts(conn: Connection, since: date) -> list[dict[str, object]]:
    rows = await conn.fetch(
        "SELECT day, signal, count FROM suppressed_visits WHERE day >= $1 ORDER BY day, signal",
        since,
    )
    return [{"day": r["day"], "signal": r["signal"], "count": r["count"]} for r in rows]


async def record_release(
    conn: Connection,
    *,
    release_id: UUID,
    audience: str,
    site: str,
    grain: str,
    start: datetime,
    end: datetime,
    k: int,
    epsilon: float | None,
    windows: int,
    cells_published: int,
    cells_suppressed: int,
) -> datetime:
    released_at: datetime = await conn.fetchval(
        """
        INSERT INTO trend_releases (id, audience, site, grain, from_time, to_time, k, epsilon,
                                    windows, cells_published, cells_suppressed)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING released_at
        """,
        release_id,
        audience,
        site,
        grain,
        start,
        end,
        k,
        epsilon,
        windows,
        cells_published,
        cells_suppressed,
    )
    return released_at


async def forget_releases(conn: Connection, age: timedelta) -> int:
    result = await conn.execute(
        "DELETE FROM trend_releases WHERE released_at < now() - $1::interval", age
    )
    return int(result.split()[-1])


@dataclass(frozen=True)
class Forgotten:
    removed: dict[str, int]  # rows per table (and grain)
    published: list[tuple[str, WindowGrain, datetime]]  # windows once on analytics.trends


async def forget_old(
    conn: Connection, visitor_set_age: timedelta, retention: dict[WindowGrain, timedelta]
) -> Forgotten:
    """Drop visitor sets past their age and windows past their grain's retention,
    counted from the end of the window's UTC day: a day's hours go with the day, never
    before it (a day's release is checked against its hours)."""
    removed = {}
    published: list[tuple[str, WindowGrain, datetime]] = []
    # By the window's end, as visits are accepted by their time: a set dropped while its
    # window still took late visits would count each of them as a new visitor.
    result = await conn.execute(
        "DELETE FROM trend_cell_visitors WHERE window_start < now() - $1::interval"
        " - CASE grain WHEN 'minute' THEN interval '1 minute'"
        " WHEN 'hour' THEN interval '1 hour' ELSE interval '1 day' END",
        visitor_set_age,
    )
    removed["visitor_sets"] = int(result.split()[-1])
    # The window's UTC day started before now - age - 1 day: it starts before the first
    # day boundary at or after that moment.
    expired = (
        "grain = $1 AND window_start < date_trunc('day', now() - $2::interval"
        " - interval '1 microsecond', 'UTC') + interval '1 day'"
    )
    for grain, age in retention.items():
        for table in ("trend_cell_load_times", "trend_cells"):
            result = await conn.execute(
                f"DELETE FROM {table} WHERE {expired}",  # noqa: S608
                grain,
                age + GRAIN_LENGTH["day"],
            )
            removed[f"{table}.{grain}"] = int(result.split()[-1])
        row = await conn.fetchrow(
            f"WITH gone AS (DELETE FROM trend_windows WHERE {expired}"  # noqa: S608
            " RETURNING site, window_start, published_revision > 0 AS published)"
            " SELECT count(*) AS n, array_agg(site) FILTER (WHERE published) AS sites,"
            " array_agg(window_start) FILTER (WHERE published) AS starts FROM gone",
            grain,
            age + GRAIN_LENGTH["day"],
        )
        assert row is not None  # an aggregate always answers one row
        removed[f"trend_windows.{grain}"] = row["n"]
        published += [(site, grain, start) for site, start in
                      zip(row["sites"] or (), row["starts"] or (), strict=True)]  # fmt: skip
    return Forgotten(removed, published)


ERASED = "(erased)"  # the label that cells naming an erased subject are merged into

# Each statement moves the rows whose label holds the subject's id into their window and
# dimension's ERASED cell, and answers how many it moved. Merged, not deleted: a deleted
# cell could be read off as its window's total minus the cells left, below k or not; the
# ERASED cell keeps every sum true and goes through the release's k rules like any cell.
_MOVE_LOAD_TIMES = f"""
WITH gone AS (
    DELETE FROM trend_cell_load_times WHERE value ILIKE $1
    RETURNING site, grain, window_start, dimension, bucket, count
), merged AS (
    INSERT INTO trend_cell_load_times ({_CELL_COLS}, bucket, count)
    SELECT site, grain, window_start, dimension, '{ERASED}', bucket, sum(count)
    FROM gone GROUP BY site, grain, window_start, dimension, bucket
    ON CONFLICT ({_CELL_COLS}, bucket) DO UPDATE SET
        count = trend_cell_load_times.count + EXCLUDED.count
)
SELECT count(*) FROM gone
"""  # noqa: S608 - constants
_MOVE_VISITORS = f"""
WITH gone AS (
    DELETE FROM trend_cell_visitors WHERE value ILIKE $1
    RETURNING site, grain, window_start, dimension, visitor_hash
), merged AS (
    INSERT INTO trend_cell_visitors ({_CELL_COLS}, visitor_hash)
    SELECT DISTINCT site, grain, window_start, dimension, '{ERASED}', visitor_hash FROM gone
    ON CONFLICT DO NOTHING
)
SELECT count(*) FROM gone
"""  # noqa: S608 - constants
# Unique visitors of merged cells cannot be added up (one visitor may be in several) and
# their sets may be gone (kept for a bounded time): the merged cell counts the largest
# of them, which is never more than it holds, so its k test never passes too easily.
_MOVE_CELLS = f"""
WITH gone AS (
    DELETE FROM trend_cells WHERE value ILIKE $1
    RETURNING site, grain, window_start, dimension, visits, unique_visitors
), merged AS (
    INSERT INTO trend_cells ({_CELL_COLS}, visits, unique_visitors)
    SELECT site, grain, window_start, dimension, '{ERASED}', sum(visits), max(unique_visitors)
    FROM gone GROUP BY site, grain, window_start, dimension
    ON CONFLICT ({_CELL_COLS}) DO UPDATE SET
        visits = trend_cells.visits + EXCLUDED.visits,
        unique_visitors = greatest(trend_cells.unique_visitors, EXCLUDED.unique_visitors)
)
SELECT DISTINCT site, grain, window_start, count(*) OVER () AS moved FROM gone
"""  # noqa: S608 - constants


async def erase_subject_traces(conn: Connection, subject_id: UUID) -> dict[str, int]:
    """Analytics keys nothing to a person; any cell whose label holds the id is merged
    into its dimension's ERASED cell anyway (its label goes; the sums stay true).

    A window already published with such a cell gets a new revision: it is published
    again without it, which replaces it on the compacted trends topic.
    """
    needle = f"%{subject_id}%"
    counts = {
        "trend_cell_load_times": int(await conn.fetchval(_MOVE_LOAD_TIMES, needle)),
        "trend_cell_visitors": int(await conn.fetchval(_MOVE_VISITORS, needle)),
    }
    gone = await conn.fetch(_MOVE_CELLS, needle)
    counts["trend_cells"] = gone[0]["moved"] if gone else 0
    windows = {(r["site"], r["grain"], r["window_start"]) for r in gone}
    result = await conn.execute(
        "UPDATE trend_windows w SET revision = w.revision + 1"
        " FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS g(site, grain, ws)"
        " WHERE (w.site, w.grain, w.window_start) = (g.site, g.grain, g.ws)"
        " AND w.published_revision > 0",
        [w[0] for w in windows],
        [w[1] for w in windows],
        [w[2] for w in windows],
    )
    counts["republished_windows"] = int(result.split()[-1])
    return counts
