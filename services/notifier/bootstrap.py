"""The notifier's composition root: settings read once, runtime opened once."""

from __future__ import annotations

from pathlib import Path

from services.notifier.config import NotifierSettings
from shared.service import Runtime, open_runtime

MIGRATIONS = Path(__file__).parent / "migrations"
DATABASE = "notifier"


async def bootstrap(
    settings: NotifierSettings, *, with_producer: bool = False, pool_size: int = 10
) -> Runtime:
    return await open_runtime(
        settings,
        DATABASE,
        MIGRATIONS,
        with_vault=True,
        with_producer=with_producer,
        pool_size=pool_size,
    )
