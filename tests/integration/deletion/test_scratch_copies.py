"""Restored backup copies a killed verifier left behind are dropped (P-14, P-16)."""

import time

import asyncpg
import pytest

from services.deletion import backups
from services.deletion.config import DeletionSettings


@pytest.mark.usefixtures("stack")
async def test_scratch_copies_older_than_an_hour_are_dropped_and_younger_ones_kept() -> None:
    settings = DeletionSettings()
    now = time.time()
    left = f"{backups.scratch_prefix(now - 2 * 3600)}_accounts"  # a scan killed long ago
    running = f"{backups.scratch_prefix(now - 60)}_accounts"  # another worker's, under way
    conn = await asyncpg.connect(settings.admin_dsn("postgres"))
    try:
        for name in (left, running):
            await conn.execute(f'CREATE DATABASE "{name}"')
        try:
            dropped = await backups.drop_stale_scratch(settings, now)
            present = {
                r["datname"]
                for r in await conn.fetch(
                    "SELECT datname FROM pg_database WHERE datname = ANY($1::text[])",
                    [left, running],
                )
            }
        finally:
            await backups.drop_databases(settings, [left, running])
    finally:
        await conn.close()
    assert left in dropped
    assert running not in dropped
    assert present == {running}
