"""The accounts service's composition root: settings read once, runtime opened once."""

from __future__ import annotations

from pathlib import Path

from services.accounts.config import AccountsSettings
from shared.service import Runtime, open_runtime

MIGRATIONS = Path(__file__).parent / "migrations"
DATABASE = "accounts"


async def bootstrap(settings: AccountsSettings) -> Runtime:
    return await open_runtime(settings, DATABASE, MIGRATIONS, with_vault=True)
