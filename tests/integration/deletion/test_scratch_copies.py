"""Restored backup copies a killed verifier left behind are dropped (P-14, P-16)."""

import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from services.deletion import backups
from services.deletion.config import DeletionSettings
from tests.integration.deletion.harness import copy_holding, harness_settings, running_harness


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
            present = await _existing(settings, [left, running])
        finally:
            await backups.drop_databases(settings, [left, running])
    finally:
        await conn.close()
    assert left in dropped
    assert running not in dropped
    assert present == {running}


@pytest.mark.promise("P-16")
@pytest.mark.parametrize("verify_backups", [True, False], ids=["no-snapshot", "backups-off"])
async def test_a_killed_verifications_copy_is_gone_before_a_request_is_certified(
    scratch_dsn: str, suffix: str, tmp_path: Path, verify_backups: bool
) -> None:
    """A verification killed between pg_restore and the replay leaves a snapshot's copy as
    it was, an erased subject's rows in it. Once that snapshot has expired, or backups
    are no longer verified, no verification restores a snapshot: the copy must go all
    the same, or a request is certified while its subject's rows are still in it."""
    settings = harness_settings(
        scratch_dsn, suffix, tmp_path, deletion_verify_backups=verify_backups
    )
    left = f"{backups.scratch_prefix(time.time() - 2 * 3600)}_analytics"
    subject = uuid.uuid4()
    await copy_holding(settings, left, subject)
    try:
        async with running_harness(settings) as harness:
            request_id, _ = await harness.request_deletion(subject)
            assert (await harness.wait_for([request_id], "complete"))[request_id] == "complete"
            assert await _existing(settings, [left]) == set()
    finally:
        await backups.drop_databases(settings, [left])


async def _existing(settings: DeletionSettings, names: list[str]) -> set[str]:
    conn = await asyncpg.connect(settings.admin_dsn("postgres"))
    try:
        rows = await conn.fetch(
            "SELECT datname FROM pg_database WHERE datname = ANY($1::text[])", names
        )
    finally:
        await conn.close()
    return {r["datname"] for r in rows}
