"""The analytics service's composition root: settings read once, runtime opened once."""

from __future__ import annotations

from pathlib import Path

from services.analytics.config import AnalyticsSettings
from shared.service import Runtime, open_runtime

MIGRATIONS = Path(__file__).parent / "migrations"
DATABASE = "analytics"


async def bootstrap(settings: AnalyticsSettings, *, with_producer: bool = False) -> Runtime:
    # No vault: analytics holds no personal data to seal.
    return await open_runtime(
        settings, DATABASE, MIGRATIONS, with_vault=False, with_producer=with_producer
    )
