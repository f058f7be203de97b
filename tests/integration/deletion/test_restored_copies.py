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
from typing import Any

import asyncpg
import pytest

from services.deletion import backups, handlers
from services.deletion.bootstrap import dependencies
from services.deletion.config import DeletionSettings
from services.deletion.copy_locks import CopyOwner, try_claim
from tests.integration.deletion.harness import (
    copy_holding,
    harness_settings,
    running_harness,
    unowned_database,
)


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
    await unowned_database(settings, copy)
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


@pytest.mark.promise("P-16")
async def test_a_restore_stopped_before_its_replay_counts_as_a_copy_at_once(
    scratch_dsn: str, suffix: str, tmp_path: Path
) -> None:
    """A copy gets its restored_ name once replayed; one whose restore stopped before
    (a killed command) keeps its restoring_ name, and is searched and dropped as a
    restored copy as soon as no restore owns it, seconds old or not; one a restore is
    still filling is not, however old its name."""
    settings = harness_settings(scratch_dsn, suffix, tmp_path)
    now = int(time.time())
    stopped = f"{backups.RESTORING}{now}_t{uuid.uuid4().hex[:10]}_analytics"
    running = f"{backups.RESTORING}{now - 7200}_t{uuid.uuid4().hex[:10]}_analytics"
    await unowned_database(settings, stopped)  # as a killed restore leaves it
    conn = await asyncpg.connect(settings.admin_dsn("postgres"))
    try:
        async with CopyOwner(settings) as owner:
            await owner.create(running)
            listed = await backups.restored_databases(conn)
        listed_after = await backups.restored_databases(conn)  # its restore stopped
    finally:
        await conn.close()
        await backups.drop_databases(settings, [stopped, running])
    assert stopped in listed
    assert running not in listed  # a restore under way: not yet replayed
    assert running in listed_after


@pytest.mark.promise("P-16")
async def test_a_restore_under_way_is_no_copy_until_replayed_however_long_it_takes(
    scratch_dsn: str, suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the verifier would read of a restore before its replay: the snapshot as it
    was, subjects erased since in it. Listed while the replay runs (its name hours old,
    a big restore), it would fail their requests, and ``drop-restored`` could drop it."""
    settings = harness_settings(scratch_dsn, suffix, tmp_path)
    staged: list[str] = []
    listed: list[str] = []

    def staging_name(target: str) -> str:
        hours_ago = int(time.time()) - 7200  # as a restore begun two hours ago names it
        staged.append(f"{backups.RESTORING}{hours_ago}_{target.removeprefix(backups.RESTORED)}")
        return staged[-1]

    async def replay(settings_: DeletionSettings, target: str, plan: list[Any]) -> int:
        conn = await asyncpg.connect(settings.admin_dsn("postgres"))
        try:
            listed.extend(await backups.restored_databases(conn))
        finally:
            await conn.close()
        return await real_replay(settings_, target, plan)

    real_replay = backups.apply_replay
    monkeypatch.setattr(backups, "_staging_name", staging_name)
    monkeypatch.setattr(backups, "apply_replay", replay)
    prefix = f"{backups.RESTORED}t{uuid.uuid4().hex[:10]}"
    try:
        async with running_harness(settings, with_worker=False):
            snapshot = await backups.take(settings, databases=["analytics"])
            targets = await backups.restore(
                settings, snapshot, target_prefix=prefix, databases=["analytics"]
            )
        assert len(staged) == 1
        assert staged[0] not in listed
        assert targets == {"analytics": f"{prefix}_analytics"}
        assert f"{prefix}_analytics" in await backups.restored_copies(settings)
        # Anywhere but in postgres, every owner's lock would look free.
        conn = await asyncpg.connect(settings.database_dsn("deletion"))
        try:
            with pytest.raises(backups.BackupError, match="postgres database"):
                await backups.restored_databases(conn)
        finally:
            await conn.close()
    finally:
        await backups.drop_databases(settings, [f"{prefix}_analytics", *staged])


@pytest.mark.promise("P-16")
async def test_a_copy_renamed_while_the_copies_are_looked_up_is_found_by_its_new_name(
    scratch_dsn: str, suffix: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A restore renames its copy and unlocks it between the search's listing and its
    claim: the claim then takes a name no copy has any more (the scan finds no such
    database) and the copy, under its new restored_ name, must not go unsearched."""
    settings = harness_settings(scratch_dsn, suffix, tmp_path)
    tag = f"t{uuid.uuid4().hex[:10]}_analytics"
    staging = f"{backups.RESTORING}{int(time.time())}_{tag}"
    target = f"{backups.RESTORED}{tag}"
    renamed: list[str] = []

    async def claim_after_the_rename(conn: Any, name: str) -> bool:
        if name == staging and not renamed:  # listed as restoring_, its replay done since
            await owner.rename(staging, target)  # renamed, then unlocked
            renamed.append(name)
        return await try_claim(conn, name)

    monkeypatch.setattr(backups, "try_claim", claim_after_the_rename)
    conn = await asyncpg.connect(settings.admin_dsn("postgres"))
    try:
        async with CopyOwner(settings) as owner:
            await owner.create(staging)
            listed = await backups.restored_databases(conn)
    finally:
        await conn.close()
        await backups.drop_databases(settings, [staging, target])
    assert renamed == [staging]
    assert target in listed
    assert staging not in listed  # no copy by that name any more


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
