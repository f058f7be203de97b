"""Fixtures of the deletion end-to-end tests.

The deletion worker started for these tests uses a short grace period (``GRACE_SECONDS``) and short
retries, so a whole request runs in seconds (a worker already running with the 14-day
default, e.g. from ``make run``, would keep these requests in grace). Its retention
rules are the shipped ones with the financial_records period cut to
``FINANCIAL_RETENTION_SECONDS`` (version suffixed ``+e2e``), so P-13 sees the kept
invoices go.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from services.deletion.config import DeletionSettings
from services.deletion.domain.retention import parse_policy
from shared.config import PlatformSettings
from shared.databases import VAULT_DATABASE
from shared.db import create_pool
from shared.vault import Vault
from tests.e2e.accounts.support import BusTail, start_tail
from tests.e2e.deletion.support import GRACE_SECONDS, needs_every_service

FINANCIAL_RETENTION_SECONDS = float(os.environ.get("IMT_E2E_FINANCIAL_RETENTION_SECONDS", "20"))
TEST_RULES_SUFFIX = "+e2e"


def _test_retention_file() -> str:
    """The shipped rules, financial_records kept for seconds instead of five years."""
    shipped = Path(DeletionSettings.model_fields["deletion_retention_file"].default)
    text, edits = re.subn(
        r'(category = "financial_records"\n(?:(?!\[\[rule\]\]).*\n)*?)period_days = [0-9.]+',
        rf"\g<1>period_days = {FINANCIAL_RETENTION_SECONDS / 86400!r}",
        shipped.read_text(),
    )
    text, versions = re.subn(r'^version = "(.*)"', rf'version = "\1{TEST_RULES_SUFFIX}"', text,
                             flags=re.M)  # fmt: skip
    assert (edits, versions) == (1, 1), "retention.toml changed shape: update this fixture"
    financial = next(r for r in parse_policy(text).rules if r.category == "financial_records")
    assert abs(financial.period.total_seconds() - FINANCIAL_RETENTION_SECONDS) < 0.01
    target = Path(tempfile.gettempdir()) / f"imt-e2e-retention-{os.getuid()}.toml"
    target.write_text(text)
    return str(target)


for name, value in {
    "IMT_DELETION_GRACE_SECONDS": str(GRACE_SECONDS),
    "IMT_DELETION_TICK_SECONDS": "0.2",
    "IMT_DELETION_RETRY_SECONDS": "2",
    "IMT_DELETION_STORE_TIMEOUT_SECONDS": "90",
    "IMT_DELETION_BACKUP_POLL_SECONDS": "1",
    "IMT_DELETION_VERIFY_LEASE_SECONDS": "10",
    "IMT_DELETION_RETENTION_FILE": _test_retention_file(),
    # Lapsed sign-ups (aged by the test) are looked for every second.
    "IMT_ACCOUNTS_LAPSE_SWEEP_SECONDS": "1",
}.items():
    os.environ.setdefault(name, value)


@pytest.fixture
async def client(platform: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=platform, timeout=60) as c:
        yield c


@pytest.fixture
async def bus(settings: PlatformSettings) -> AsyncIterator[BusTail]:
    """The platform's topics, read from now on (every service must be running)."""
    needs_every_service()
    tail = await start_tail(settings)
    yield tail
    assert tail.task is not None
    tail.task.cancel()
    await tail.consumer.stop()


@pytest.fixture
async def vault(settings: PlatformSettings) -> AsyncIterator[Vault]:
    pool = await create_pool(settings.database_dsn(VAULT_DATABASE), max_size=2)
    opened_vault = await Vault.connect(settings, pool)
    yield opened_vault
    await opened_vault.close()
    await pool.close()
