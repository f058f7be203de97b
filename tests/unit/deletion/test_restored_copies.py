"""Restored copies are named so that the verifier finds every one (the search itself
runs on real PostgreSQL in tests/integration/deletion/test_restored_copies.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path

import pytest

from services.deletion import backups
from services.deletion.config import DeletionSettings
from services.deletion.domain.retention import parse_policy
from services.deletion.verifier import Verifier
from tests.unit.deletion.factories import T0
from tests.unit.deletion.fake_store import RULES

MANIFEST = backups.Manifest(
    "20250131T120000Z-ab12cd34", T0, T0 + timedelta(days=35), ("accounts",), Path("/nowhere")
)


def test_every_restore_from_the_command_line_is_named_as_a_restored_copy() -> None:
    assert backups.restored_prefix(MANIFEST) == "restored_20250131t120000z_ab12cd34"
    assert backups.restored_prefix(MANIFEST, "inquiry_7") == "restored_inquiry_7"
    assert backups.restored_prefix(MANIFEST, "restored_x") == "restored_x"


class Pool:
    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[None]:
        yield None


async def test_the_verifier_searches_every_restored_copy_but_the_ledgers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def listed(_settings: object) -> list[str]:
        return [
            "restored_s1_accounts",
            "restored_s1_deletion",  # ids and dates, kept as proof like the ledger itself
            "restored_inquiry_7_notifier",
            "restored_odd",
        ]

    monkeypatch.setattr(backups, "restored_copies", listed)
    verifier = Verifier(
        DeletionSettings(environment="test"),
        parse_policy(RULES),
        None,  # type: ignore[arg-type]
        Pool(),  # type: ignore[arg-type]
    )
    assert await verifier._restored_copies() == [
        ("restored_s1_accounts", "accounts"),
        ("restored_inquiry_7_notifier", "notifier"),
        ("restored_odd", "restored_odd"),
    ]
