"""Restored copies an operator left are searched by the verifier, on real PostgreSQL.

``backups restore`` makes databases nothing tracks (``restored_...``) and no later
erasure reaches: a subject erased since the copy was made is found there, and the
request is escalated without a certificate until the copy is dropped.
"""

from __future__ import annotations

import shutil
import time
import uuid
from pathlib import Path

import asyncpg
import pytest

from services.deletion import backups, handlers
from services.deletion.bootstrap import dependencies
from tests.integration.deletion.harness import copy_holding, harness_settings, running_harness


async def test_a_subject_left_in_a_restored_copy_fails_the_verification(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    settings = harness_settings(scratch_dsn, suffix, tmp_path, deletion_verify_backups=False)
    copy = f"{backups.RESTORED}t{uuid.uuid4().hex[:10]}_analytics"
    subject = uuid.uuid4()
    # As a restore made before the erasure leaves it: the subject's rows, as they were.
    await copy_holding(settings, copy, subject)
    try:
        async with running_harness(settings) as harness:
            request_id, _ = await harness.request_deletion(subject)
            assert (await harness.wait_for([request_id], "escalated"))[request_id] == ("escalated")
            row = await harness.pool.fetchrow(
                "SELECT reason, erased_at FROM deletion_requests WHERE request_id = $1",
                request_id,
            )
            assert row is not None
            assert row["erased_at"] is not None  # the live stores were erased
            assert f"restored:{copy}/analytics.visits.visitor (1 rows)" in row["reason"]
            certificate = await harness.pool.fetchval(
                "SELECT count(*) FROM certificates WHERE request_id = $1", request_id
            )
            assert certificate == 0

            # The operator drops the copy and retries: verified clean, certified.
            assert await backups.drop_restored(settings, [copy]) == [copy]
            deps = dependencies(settings, harness.runtime)
            async with harness.pool.acquire() as pooled, pooled.transaction():
                await handlers.retry_escalated(pooled, deps, request_id, uuid.uuid4())
            assert (await harness.wait_for([request_id], "complete"))[request_id] == "complete"
    finally:
        await backups.drop_databases(settings, [copy])


async def test_drop_restored_drops_only_restored_copies(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    settings = harness_settings(scratch_dsn, suffix, tmp_path)
    copy = f"{backups.RESTORED}t{uuid.uuid4().hex[:10]}_accounts"
    await backups._create_database(settings, copy)
    try:
        with pytest.raises(backups.BackupError, match="not a restored copy: accounts"):
            await backups.drop_restored(settings, ["accounts", copy])
        conn = await asyncpg.connect(settings.admin_dsn("postgres"))
        try:
            assert copy in await backups.restored_databases(conn)
            assert await backups.drop_restored(settings, [copy]) == [copy]
            assert copy not in await backups.restored_databases(conn)
        finally:
            await conn.close()
    finally:
        await backups.drop_databases(settings, [copy])


async def test_a_restore_stopped_before_its_replay_counts_as_a_copy_once_stale(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    """A copy gets its restored_ name once replayed; one whose restore stopped before
    (a killed command) keeps its restoring_ name, and is searched and dropped as a
    restored copy once it is older than any restore takes."""
    settings = harness_settings(scratch_dsn, suffix, tmp_path)
    now = int(time.time())
    stale = f"{backups.RESTORING}{now - 7200}_t{uuid.uuid4().hex[:10]}_analytics"
    running = f"{backups.RESTORING}{now}_t{uuid.uuid4().hex[:10]}_analytics"
    for name in (stale, running):
        await backups._create_database(settings, name)
    try:
        conn = await asyncpg.connect(settings.admin_dsn("postgres"))
        try:
            listed = await backups.restored_databases(conn)
        finally:
            await conn.close()
        assert stale in listed
        assert running not in listed  # maybe a restore under way: not yet replayed
    finally:
        await backups.drop_databases(settings, [stale, running])


async def test_a_take_into_an_empty_mount_point_is_refused(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    """Marked there, the next expire would take every live snapshot for gone (P-16)."""
    backup_dir = tmp_path / "volume"
    settings = harness_settings(scratch_dsn, suffix, backup_dir)
    async with running_harness(settings, with_worker=False):
        await backups.take(settings, databases=["analytics"])
        assert (backup_dir / backups.MARKER).is_file()
        shutil.rmtree(backup_dir)  # the volume is gone: an empty mount point instead
        backup_dir.mkdir()
        with pytest.raises(backups.BackupError, match="is the backup volume mounted"):
            await backups.take(settings, databases=["analytics"])
        assert list(backup_dir.iterdir()) == []  # nothing written there, no marker
