"""Snapshot expiry: a snapshot is marked expired only once its folder is really gone.

Real folders under ``tmp_path``; the deletion database is a stand-in that records the
statements it is given (the SQL itself runs in tests/integration/deletion).
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from services.deletion import backups
from tests.unit.deletion.factories import T0


class Recording:
    """A pool and its one connection: ``fetch`` returns the snapshot rows given."""

    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows
        self.executed: list[tuple[str, tuple[Any, ...]]] = []

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Recording]:
        yield self

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield

    async def fetch(self, _sql: str, *_args: Any) -> list[dict[str, Any]]:
        return self.rows

    async def execute(self, sql: str, *args: Any) -> str:
        self.executed.append((sql, args))
        return "UPDATE 1"

    def stamped(self) -> list[str]:
        return [a[0] for s, a in self.executed if s.startswith("UPDATE backup_snapshots")]

    def woken(self) -> list[tuple[Any, ...]]:
        return [a for s, a in self.executed if s.startswith("UPDATE deletion_requests")]


def _snapshot(root: Path, name: str, *, expires_in: timedelta) -> dict[str, Any]:
    folder = root / name
    folder.mkdir(parents=True)
    (folder / "accounts.dump").write_bytes(b"dump")
    return {
        "snapshot_id": name,
        "path": str(folder),
        "taken_at": T0 - timedelta(days=40) + timedelta(hours=len(name)),
        "expires_at": T0 + expires_in,
    }


def _on_disk(snapshot: dict[str, Any]) -> bool:
    return Path(snapshot["path"]).exists()


def _mounted(root: Path) -> Path:
    """The backup folder as ``take`` leaves it: marked as the backups' own."""
    (root / backups.MARKER).write_text("")
    return root


async def test_a_snapshot_whose_removal_fails_stays_live_and_wakes_nobody(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    row = _snapshot(_mounted(tmp_path), "s1", expires_in=-timedelta(seconds=1))

    def refuse(_path: object, *_a: object, **_kw: object) -> None:
        raise PermissionError(13, "Permission denied", f"{row['path']}/accounts.dump")

    monkeypatch.setattr(shutil, "rmtree", refuse)
    db = Recording([row])
    with caplog.at_level(logging.ERROR, logger=backups.__name__):
        assert await backups.expire_due(db, tmp_path, T0) == []  # type: ignore[arg-type]
    assert _on_disk(row)
    assert db.stamped() == []
    assert db.woken() == []
    assert "s1" in caplog.text
    assert "accounts.dump" not in caplog.text  # the error's kind, not its message


async def test_a_removed_snapshot_is_stamped_and_wakes_the_requests_it_held(
    tmp_path: Path,
) -> None:
    due = _snapshot(_mounted(tmp_path), "due", expires_in=-timedelta(seconds=1))
    live = _snapshot(tmp_path, "live-one", expires_in=timedelta(days=1))
    db = Recording([due, live])
    assert await backups.expire_due(db, tmp_path, T0) == ["due"]  # type: ignore[arg-type]
    assert not _on_disk(due)
    assert _on_disk(live)
    assert db.stamped() == ["due"]
    # Only requests erased after the removed snapshot was taken: one verifying under its
    # lease had no snapshot left to wait for, and is not made due a second time.
    [(now, erased_after)] = db.woken()
    assert (now, erased_after) == (T0, due["taken_at"])


async def test_a_folder_missing_before_its_expiry_counts_as_gone_only_once_due(
    tmp_path: Path,
) -> None:
    # Removed, or moved away (another volume, a copy under way): the dump may be
    # elsewhere, so the snapshot holds its requests until it is due.
    gone = _snapshot(_mounted(tmp_path), "gone", expires_in=timedelta(days=1))
    shutil.rmtree(gone["path"])
    db = Recording([gone])
    assert await backups.expire_due(db, tmp_path, T0) == []  # type: ignore[arg-type]
    assert db.stamped() == []
    assert db.woken() == []
    later = T0 + timedelta(days=1)
    assert await backups.expire_due(db, tmp_path, later) == ["gone"]  # type: ignore[arg-type]


async def test_an_empty_mount_point_is_not_taken_for_the_backup_folder(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "volume"
    root.mkdir()
    _mounted(root)
    due = _snapshot(root, "due", expires_in=-timedelta(days=1))
    live = _snapshot(root, "live", expires_in=timedelta(days=1))
    root.rename(tmp_path / "unmounted")  # the dumps are still on the volume, out of sight
    root.mkdir()  # the mount point, empty: a folder all the same
    db = Recording([due, live])
    with caplog.at_level(logging.ERROR, logger=backups.__name__):
        assert await backups.expire_due(db, root, T0) == []  # type: ignore[arg-type]
    assert db.stamped() == []
    assert db.woken() == []
    assert backups.MARKER in caplog.text


async def test_without_the_backup_volume_nothing_is_stamped_not_even_past_expiry(
    tmp_path: Path,
) -> None:
    root = tmp_path / "volume"
    due = _snapshot(root, "due", expires_in=-timedelta(days=1))
    root.rename(tmp_path / "unmounted")  # the dump is still on the volume, out of sight
    db = Recording([due])
    assert await backups.expire_due(db, root, T0) == []  # type: ignore[arg-type]
    assert db.stamped() == []
    assert db.woken() == []
