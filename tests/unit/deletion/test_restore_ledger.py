"""A restore replays what the ledger holds once the dump is in, not what it held when the
restore began: ``pg_restore`` takes minutes per database, and an erasure or a release
that starts meanwhile must not come back with the copy (P-16). (The replay itself runs
on real PostgreSQL in tests/integration/deletion/test_request_replay.py.)"""

from __future__ import annotations

import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from services.deletion import backups, store
from services.deletion.config import DeletionSettings
from services.deletion.domain.replay import LedgerEntry, ReleaseEntry, ReplayDelete
from tests.unit.deletion.factories import T0


class Pool:
    """The deletion database's pool: the ledger's reads are stubbed."""

    def acquire(self) -> Pool:
        return self

    async def __aenter__(self) -> Pool:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        return None

    async def close(self) -> None:
        return None


async def test_what_the_ledger_records_while_a_dump_restores_is_replayed_in_that_copy(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    ledger: list[LedgerEntry] = []
    released: list[ReleaseEntry] = []
    started: dict[str, uuid.UUID] = {}  # database -> subject erased while it restored
    planned: dict[str, list[ReplayDelete]] = {}

    async def pool(_settings: object) -> Pool:
        return Pool()

    async def read_ledger(_conn: object) -> list[LedgerEntry]:
        return list(ledger)

    async def read_released(_conn: object) -> list[ReleaseEntry]:
        return list(released)

    async def restore_dump(_settings: object, dump: Path, _target: str, _owner: object) -> None:
        # Meanwhile a grace period ends and the worker starts erasing someone, and a
        # kept category's release goes out.
        subject = uuid.uuid4()
        started[dump.stem] = subject
        ledger.append(LedgerEntry(uuid.uuid4(), subject, "account", None, T0, None))
        released.append(ReleaseEntry(subject, "disclosure_log", None))

    async def apply_replay(_settings: object, target: str, plan: list[ReplayDelete]) -> int:
        planned[target] = plan
        return len(plan)

    monkeypatch.setattr(backups, "_deletion_pool", pool)
    monkeypatch.setattr(store, "ledger", read_ledger)
    monkeypatch.setattr(store, "released", read_released)
    monkeypatch.setattr(backups, "restore_dump", restore_dump)
    monkeypatch.setattr(backups, "apply_replay", apply_replay)
    manifest = backups.Manifest(
        "s", T0 - timedelta(days=1), T0 + timedelta(days=34), ("accounts", "notifier"), tmp_path
    )

    targets = await backups.restore(DeletionSettings(), manifest, target_prefix="verify_1_x")

    assert targets == {"accounts": "verify_1_x_accounts", "notifier": "verify_1_x_notifier"}
    for database, target in targets.items():
        replayed: dict[Any, set[str]] = {}
        for delete in planned[target]:
            replayed.setdefault(delete.value, set()).add(delete.table)
        subject = started[database]
        assert subject in replayed, f"{database}: the erasure begun during its restore"
        # The release's own deletes (the disclosure log) are replayed too.
        assert {"disclosures", "erasures"} & replayed[subject], database
