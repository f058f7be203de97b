"""A verification that fails every time, on real PostgreSQL and pg_restore: the newest
snapshot cannot be restored, or cannot even be read on this host (the backup volume is
not mounted here). The request is put back with back-off and escalated at last, never
certified, and no log line carries pg_restore's output (it can quote a dump's rows) or
the subject."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

import asyncpg
import httpx
import pytest

from services.deletion import backups, handlers, store
from services.deletion.bootstrap import dependencies
from services.deletion.config import DeletionSettings
from services.deletion.handlers import Deps
from services.deletion.verifier import SnapshotUnreadable
from shared.config import PlatformSettings
from shared.observability import PROBLEM_CONTENT_TYPE
from tests.integration.deletion.harness import (
    Harness,
    harness_settings,
    operator_api,
    running_harness,
    scratch_topics,
)


@pytest.fixture
async def suffix(settings: PlatformSettings) -> AsyncIterator[str]:
    async with scratch_topics(DeletionSettings(environment="test")) as name:
        yield name


async def _unrestorable_snapshot(pool: asyncpg.Pool, root: Path) -> None:
    """The newest snapshot, complete by its manifest and in the index, whose dump
    pg_restore refuses."""
    taken = datetime.now(UTC) + timedelta(days=1)  # newer than any other
    folder = root / f"{taken:%Y%m%dT%H%M%S}Z-0badd0c5"
    folder.mkdir(parents=True)
    (folder / "analytics.dump").write_bytes(b"not an archive at all")
    manifest = {
        "snapshot_id": folder.name,
        "taken_at": taken.isoformat(),
        "expires_at": (taken + timedelta(days=35)).isoformat(),
        "databases": ["analytics"],
    }
    (folder / "manifest.json").write_text(json.dumps(manifest))
    await pool.execute(
        "INSERT INTO backup_snapshots"
        " (snapshot_id, taken_at, expires_at, completed_at, databases, path)"
        " VALUES ($1, $2, $3, now(), $4, $5)",
        folder.name,
        taken,
        taken + timedelta(days=35),
        ["analytics"],
        str(folder),
    )


async def test_a_snapshot_that_cannot_be_restored_escalates_after_back_off(
    scratch_dsn: str, suffix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)  # every logger: the ticker's loop too
    settings = harness_settings(
        scratch_dsn, suffix, tmp_path, deletion_retry_seconds=0.2, deletion_retry_max_seconds=1
    )
    async with running_harness(settings) as harness:
        await _unrestorable_snapshot(harness.pool, settings.backup_dir())
        request_id, _ = await harness.request_deletion()
        done = await harness.wait_for([request_id], "escalated", timeout=180)
        assert done[request_id] == "escalated"
        row = await harness.pool.fetchrow(
            "SELECT reason, step_failures FROM deletion_requests WHERE request_id = $1",
            request_id,
        )
        assert row is not None
        times = handlers.VERIFY_FAILURES_ESCALATED
        assert row["reason"] == f"verification failed {times} times in a row (BackupError)"
        assert row["step_failures"] == 0
        assert (await harness.history(request_id))[-2:] == ["backups_pending", "escalated"]
        certificate = await harness.pool.fetchval(
            "SELECT count(*) FROM certificates WHERE request_id = $1", request_id
        )
        assert certificate == 0

    logged = [r.getMessage() for r in caplog.records]
    failed = [m for m in logged if "verification of request" in m]
    assert len(failed) == times, logged
    assert all(str(request_id) in m and "BackupError" in m for m in failed)
    assert not [m for m in logged if "archive" in m or "pg_restore:" in m], logged
    assert not [r for r in caplog.records if r.exc_info], "a traceback carries the message"


async def _operator_verifies(
    settings: DeletionSettings, harness: Harness, deps: Deps, request_id: UUID
) -> httpx.Response:
    """An operator's POST /verify, answered by the deletion API's own route."""
    async with operator_api(settings, harness, deps) as (client, headers):
        return await client.post(f"/operator/requests/{request_id}/verify", headers=headers)


async def _settled(harness: Harness, request_id: UUID, timeout: float = 180.0) -> str | None:
    """The request's stage once it is complete or escalated (or at the timeout)."""
    deadline = time.monotonic() + timeout
    while True:
        stage = await harness.stage(request_id)
        if stage in ("complete", "escalated") or time.monotonic() > deadline:
            return stage
        await asyncio.sleep(0.1)


async def test_a_snapshot_listed_but_missing_on_this_host_fails_the_verification(
    scratch_dsn: str, suffix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A worker (or API replica) without the backup volume: ``backup_snapshots`` lists the
    newest snapshot, its folder is not here. Found missing by its own disk, it was taken
    for no snapshot at all and the request certified clean without the backup's search;
    now every verification fails (SnapshotUnreadable) until the request is escalated."""
    caplog.set_level(logging.ERROR)  # every logger: the ticker's loop too
    settings = harness_settings(
        scratch_dsn,
        suffix,
        tmp_path / "volume",
        deletion_grace_seconds=1,
        deletion_retry_seconds=0.2,
        deletion_retry_max_seconds=1,
    )
    async with running_harness(settings) as harness:
        # Taken before the request, so before its erasure: it holds the request.
        before = await backups.take(settings, databases=["analytics"])
        request_id, subject = await harness.request_deletion()
        pending = await harness.wait_for([request_id], "backups_pending")
        assert pending[request_id] == "backups_pending"
        newest = await backups.take(settings, databases=["analytics"])  # after the erasure
        elsewhere = tmp_path / "elsewhere"
        newest.folder.rename(elsewhere)  # the newest snapshot is not on this host
        await harness.pool.execute(
            "UPDATE backup_snapshots SET expires_at = now() WHERE snapshot_id = $1",
            before.snapshot_id,
        )
        assert await backups.expire(settings) == [before.snapshot_id]  # wakes the request

        assert await _settled(harness, request_id) == "escalated"  # never complete
        row = await harness.pool.fetchrow(
            "SELECT reason, step_failures FROM deletion_requests WHERE request_id = $1",
            request_id,
        )
        assert row is not None
        times = handlers.VERIFY_FAILURES_ESCALATED
        assert row["reason"] == f"verification failed {times} times in a row (SnapshotUnreadable)"
        assert (await harness.history(request_id))[-2:] == ["backups_pending", "escalated"]
        certificate = await harness.pool.fetchval(
            "SELECT count(*) FROM certificates WHERE request_id = $1", request_id
        )
        assert certificate == 0

        # The verifier says why; with the volume back, it searches that snapshot.
        deps = dependencies(settings, harness.runtime)
        assert deps.verify is not None
        async with harness.pool.acquire() as conn:
            tracked = await store.get(conn, request_id)
        assert tracked is not None
        with pytest.raises(SnapshotUnreadable, match=f"snapshot {newest.snapshot_id} cannot"):
            await deps.verify([tracked])
        answer = await _operator_verifies(settings, harness, deps, request_id)
        assert answer.status_code == 503, answer.text  # not a 500, nor a clean verdict
        assert answer.headers["content-type"] == PROBLEM_CONTENT_TYPE
        assert answer.json()["type"].endswith("/verify-unavailable")
        assert newest.snapshot_id in answer.json()["detail"]
        elsewhere.rename(newest.folder)
        verdict = (await deps.verify([tracked]))[request_id]
        assert f"backup:{newest.snapshot_id}" in verdict.scanned
        assert verdict.clean, verdict.summary()

    logged = [r.getMessage() for r in caplog.records]
    unreadable = [m for m in logged if m.startswith(f"verifier: snapshot {newest.snapshot_id}")]
    assert len(unreadable) == times + 2, logged  # the worker's tries, ours, the route's
    failed = [m for m in logged if "verification of request" in m]
    assert len(failed) == times, logged
    assert all("SnapshotUnreadable" in m for m in failed)
    assert not [m for m in logged if str(subject) in m], logged
    assert not [r for r in caplog.records if r.exc_info], "a traceback carries the message"
