"""Contact cards in tests: sealed as accounts seals them, opened as the notifier does.

The cards travel sealed with the subject's vault key, so a test that plays accounts
(publishing a card) or reads one off the topic needs the platform's vault: opened for
the call and closed after it, so nothing outlives the stack.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from shared.config import PlatformSettings
from shared.contact_card import OpenCard, open_card, seal_card
from shared.databases import VAULT_DATABASE
from shared.db import create_pool
from shared.events.catalogue.accounts import ContactCardChanged
from shared.vault import Vault


@asynccontextmanager
async def card_vault() -> AsyncIterator[Vault]:
    settings = PlatformSettings(environment="test")
    pool = await create_pool(settings.database_dsn(VAULT_DATABASE), max_size=2)
    try:
        vault = await Vault.connect(settings, pool)
        try:
            yield vault
        finally:
            await vault.close()
    finally:
        await pool.close()


async def sealed(card: OpenCard) -> ContactCardChanged:
    async with card_vault() as vault:
        return await seal_card(vault, card)


async def opened(data: dict[str, Any], vault: Vault | None = None) -> OpenCard:
    """A card's event data (as on the topic) opened, with ``vault`` or one for the call."""
    card = ContactCardChanged.model_validate(data)
    if vault is not None:
        return await open_card(vault, card)
    async with card_vault() as own:
        return await open_card(own, card)
