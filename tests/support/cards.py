"""Contact cards in tests: sealed as accounts seals them, opened as the notifier does.

The cards travel sealed with the subject's vault key, so a test that plays accounts
(publishing a card) or reads one off the topic needs the platform's vault. One vault
is opened on first use and closed with the session (``cards_vault_closed``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest

from shared.config import PlatformSettings
from shared.contact_card import OpenCard, open_card, seal_card
from shared.databases import VAULT_DATABASE
from shared.db import create_pool
from shared.events.catalogue.accounts import ContactCardChanged
from shared.vault import Vault

_opened: list[tuple[Vault, asyncpg.Pool]] = []


async def vault() -> Vault:
    if not _opened:
        settings = PlatformSettings(environment="test")
        pool = await create_pool(settings.database_dsn(VAULT_DATABASE), max_size=2)
        _opened.append((await Vault.connect(settings, pool), pool))
    return _opened[0][0]


async def sealed(card: OpenCard) -> ContactCardChanged:
    return await seal_card(await vault(), card)


async def opened(data: dict[str, Any]) -> OpenCard:
    """A card's event data (as on the topic) opened."""
    return await open_card(await vault(), ContactCardChanged.model_validate(data))


@pytest.fixture(scope="session", autouse=True)
async def cards_vault_closed() -> AsyncIterator[None]:
    yield
    while _opened:
        opened_vault, pool = _opened.pop()
        await opened_vault.close()
        await pool.close()
