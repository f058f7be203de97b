"""The services' SQL counts days in UTC whatever the server's own time zone (initdb
copies the machine's TZ): a day's cut-off taken in America/Los_Angeles lands at 01:00 or
23:00 UTC around its clock changes, and analytics' retention then deletes a window early."""

from __future__ import annotations

import asyncpg

from shared.db.pool import create_pool


async def test_a_pools_sessions_count_days_in_utc_whatever_the_servers_zone(
    scratch_dsn: str,
) -> None:
    admin = await asyncpg.connect(scratch_dsn)
    try:
        database = await admin.fetchval("SELECT current_database()")
        await admin.execute(f"ALTER DATABASE \"{database}\" SET timezone = 'America/Los_Angeles'")
        plain = await asyncpg.connect(scratch_dsn)
        try:  # the control: a session that does not ask has the server's zone
            assert await plain.fetchval("SHOW timezone") == "America/Los_Angeles"
        finally:
            await plain.close()
    finally:
        await admin.close()

    pool = await create_pool(scratch_dsn, min_size=1, max_size=1)
    try:
        assert await pool.fetchval("SHOW timezone") == "UTC"
        # The day after 2027-11-07 in UTC begins at 00:00 UTC, not at the 01:00 UTC the
        # Pacific clock change made of it.
        cutoff = await pool.fetchval(
            "SELECT date_trunc('day', '2027-11-07 12:00+00'::timestamptz) + interval '1 day'"
        )
        assert cutoff.isoformat() == "2027-11-08T00:00:00+00:00"
    finally:
        await pool.close()
