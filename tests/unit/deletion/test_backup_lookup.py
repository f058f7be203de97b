"""The verifier finds the newest snapshot in ``backup_snapshots``, never on its own disk:
one listed but not readable on this host fails the verification (the full path, on real
PostgreSQL: tests/integration/deletion/test_verification_failures.py)."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import pytest

from services.deletion import backups
from services.deletion.config import DeletionSettings
from services.deletion.domain.retention import parse_policy
from services.deletion.verifier import Hits, SnapshotUnreadable, Verifier
from shared.bus.consumer import OUTAGES
from tests.unit.deletion.factories import T0
from tests.unit.deletion.fake_store import RULES

SNAPSHOT = "20250131T120000Z-ab12cd34"


class Pool:
    """The deletion pool: its one query is the index's newest live snapshot."""

    def __init__(self, row: dict[str, Any] | None) -> None:
        self.row = row
        self.queries: list[str] = []

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Pool]:
        yield self

    async def fetchrow(self, sql: str, *_args: object) -> dict[str, Any] | None:
        self.queries.append(sql)
        return self.row


def _listed(folder: Path) -> dict[str, Any]:
    return {
        "snapshot_id": SNAPSHOT,
        "taken_at": T0,
        "expires_at": T0 + timedelta(days=35),
        "databases": ["accounts", "analytics"],
        "path": str(folder),
    }


def _verifier(pool: Pool, backup_dir: Path) -> Verifier:
    settings = DeletionSettings(environment="test", IMT_DELETION_BACKUP_DIR=str(backup_dir))
    return Verifier(settings, parse_policy(RULES), None, pool)  # type: ignore[arg-type]


@pytest.fixture(autouse=True)
def no_restore(monkeypatch: pytest.MonkeyPatch) -> None:
    async def refused(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("nothing to restore here")

    monkeypatch.setattr(backups, "restore", refused)
    monkeypatch.setattr(backups, "drop_stale_scratch", refused)


async def test_with_no_snapshot_listed_there_is_no_backup_to_search(tmp_path: Path) -> None:
    # A fresh install; a complete snapshot on this disk but not in the index counts for none.
    folder = tmp_path / SNAPSHOT
    folder.mkdir()
    (folder / "manifest.json").write_text("{}")
    pool = Pool(None)
    hits: Hits = defaultdict(dict)
    assert (
        await _verifier(pool, tmp_path)._scan_newest_backup([uuid4()], ["accounts"], hits) is None
    )
    assert not hits
    assert "expired_at IS NULL AND completed_at IS NOT NULL" in pool.queries[0]


async def test_a_listed_snapshot_missing_here_fails_the_verification(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR)
    verifier = _verifier(Pool(_listed(tmp_path / "not-mounted" / SNAPSHOT)), tmp_path)
    subject = uuid4()
    with pytest.raises(SnapshotUnreadable, match=f"snapshot {SNAPSHOT} cannot be read"):
        await verifier._scan_newest_backup([subject], ["accounts", "notifier"], defaultdict(dict))
    (message,) = [r.getMessage() for r in caplog.records]
    assert message.startswith(f"verifier: snapshot {SNAPSHOT} is live in backup_snapshots")
    assert "dumps of accounts cannot be read" in message  # notifier is not in the snapshot
    assert str(subject) not in message


async def test_a_listed_snapshot_missing_one_dump_fails_the_verification(tmp_path: Path) -> None:
    folder = tmp_path / SNAPSHOT
    folder.mkdir()
    (folder / "accounts.dump").write_bytes(b"")
    verifier = _verifier(Pool(_listed(folder)), tmp_path)
    with pytest.raises(SnapshotUnreadable, match=r"\(analytics\)"):
        await verifier._scan_newest_backup([uuid4()], ["accounts", "analytics"], defaultdict(dict))


def test_an_unreadable_snapshot_is_a_failed_verification_not_an_outage() -> None:
    # An outage (OSError, say) is never counted: the lease runs out and it is tried again,
    # for ever. A snapshot missing here is counted, and escalated at last.
    assert not issubclass(SnapshotUnreadable, OUTAGES)
