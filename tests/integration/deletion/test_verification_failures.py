"""A verification that fails every time, on real PostgreSQL and pg_restore: the newest
snapshot cannot be restored. The request is put back with back-off and escalated at
last, and no log line carries pg_restore's output (it can quote a dump's rows)."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.deletion import handlers
from services.deletion.config import DeletionSettings
from shared.config import PlatformSettings
from tests.integration.deletion.harness import harness_settings, running_harness, scratch_topics


@pytest.fixture
async def suffix(settings: PlatformSettings) -> AsyncIterator[str]:
    async with scratch_topics(DeletionSettings(environment="test")) as name:
        yield name


def _unrestorable_snapshot(root: Path) -> None:
    """The newest snapshot, complete by its manifest, whose dump pg_restore refuses."""
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


async def test_a_snapshot_that_cannot_be_restored_escalates_after_back_off(
    scratch_dsn: str, suffix: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)  # every logger: the ticker's loop too
    settings = harness_settings(
        scratch_dsn, suffix, tmp_path, deletion_retry_seconds=0.2, deletion_retry_max_seconds=1
    )
    _unrestorable_snapshot(settings.backup_dir())
    async with running_harness(settings) as harness:
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
