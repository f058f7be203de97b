"""A new address waiting for confirmation is kept only as long as its link: then the
accounts worker forgets it, and republishes the card without it (so the notifier, which
holds a copy for the link's email, forgets it too)."""

from __future__ import annotations

import logging

import asyncpg

from services.accounts import store
from services.accounts.cards import publish_card
from shared.events.catalogue.accounts import ProfileUpdated
from shared.service.periodic import Periodic
from shared.vault import Vault

log = logging.getLogger(__name__)
BATCH = 200


class PendingAddressExpiry(Periodic):
    name = "pending-address-expiry"

    def __init__(self, pool: asyncpg.Pool, vault: Vault, interval_seconds: float) -> None:
        super().__init__()
        self._pool = pool
        self._vault = vault
        self._interval = interval_seconds

    def interval(self) -> float:
        return self._interval

    async def round(self) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            expired = await store.expire_pending_addresses(conn, BATCH)
            for user in expired:
                forgotten = ProfileUpdated(user_id=user["id"], fields=("pending_email",))
                await publish_card(conn, self._vault, user, after=[forgotten])
        if expired:
            log.info("forgot %d new addresses whose link expired", len(expired))
        return len(expired) == BATCH
