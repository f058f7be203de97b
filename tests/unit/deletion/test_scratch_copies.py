"""The verifier's scratch copies a killed verification left behind are dropped whatever
the snapshots and settings are (on real PostgreSQL, with the worker:
tests/integration/deletion/test_scratch_copies.py)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from uuid import UUID

import pytest

from services.deletion import backups, verifier
from services.deletion.config import DeletionSettings
from services.deletion.domain.retention import parse_policy
from services.deletion.handlers import Deps
from services.deletion.store import Tracked
from services.deletion.verifier import Hits, Verifier
from services.deletion.worker import SnapshotExpiry
from tests.unit.deletion.factories import T0, in_stage
from tests.unit.deletion.fake_store import RULES


class Pool:
    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[None]:
        yield None


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What the verifier did, in order; every store it reaches is empty, no snapshot listed."""
    done: list[str] = []

    async def drop_stale_scratch(_settings: object) -> list[str]:
        done.append("drop stale scratch")
        return []

    async def scan_database(_dsn: str, database: str, _ids: Sequence[UUID]) -> Hits:
        done.append(f"scan {database}")
        return defaultdict(dict)

    async def restored_copies(_settings: object) -> list[str]:
        done.append("list restored copies")
        return []

    async def newest_snapshot(_conn: object) -> None:
        done.append("newest snapshot")

    monkeypatch.setattr(backups, "drop_stale_scratch", drop_stale_scratch)
    monkeypatch.setattr(backups, "restored_copies", restored_copies)
    monkeypatch.setattr(backups, "newest_snapshot", newest_snapshot)
    monkeypatch.setattr(verifier, "scan_database", scan_database)
    return done


@pytest.mark.promise("P-16")
@pytest.mark.parametrize("verify_backups", [True, False], ids=["no-snapshot", "backups-off"])
async def test_every_verification_first_drops_the_scratch_copies_left_behind(
    calls: list[str], verify_backups: bool
) -> None:
    """A copy left by a verification killed mid-restore holds the snapshot unreplayed; once
    no live snapshot is left to restore (or backups are no longer verified) it would
    otherwise outlive every later verification, certificates included."""
    settings = DeletionSettings(environment="test", deletion_verify_backups=verify_backups)
    the_verifier = Verifier(settings, parse_policy(RULES), None, Pool())  # type: ignore[arg-type]
    request = Tracked(in_stage("backups_pending", "device"), initiated_by="user")
    verdicts = await the_verifier.verify([request])
    assert verdicts[request.request.request_id].clean
    assert calls[0] == "drop stale scratch"
    assert calls.count("drop stale scratch") == 1


async def test_the_snapshot_expiry_round_drops_the_scratch_copies_left_behind(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A copy a verification killed after the last one began is still dropped, even if no
    request is ever verified again."""
    swept: list[object] = []

    async def expire_due(*_args: object) -> list[str]:
        return []

    async def drop_stale_scratch(settings: object) -> list[str]:
        swept.append(settings)
        return []

    monkeypatch.setattr(backups, "expire_due", expire_due)
    monkeypatch.setattr(backups, "drop_stale_scratch", drop_stale_scratch)
    settings = DeletionSettings(environment="test", IMT_DELETION_BACKUP_DIR=str(tmp_path))

    async def shred(_subject: UUID) -> bool:
        return True

    deps = Deps(settings, parse_policy(RULES), shred, now=lambda: T0)
    assert await SnapshotExpiry(Pool(), deps).round() is False  # type: ignore[arg-type]
    assert swept == [settings]
