"""A new address waiting for confirmation is forgotten once its link has expired, and
the card is published again without it; a pending address still in time is kept."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from services.accounts.context import EMAIL, NAME, PENDING_EMAIL
from services.accounts.pending_addresses import PendingAddressExpiry
from shared.contact_card import open_card
from shared.db.pool import Connection
from shared.events import decode_envelope, parse_event
from shared.events.catalogue.accounts import ContactCardChanged, ProfileUpdated
from shared.vault import Vault
from tests.integration.accounts.users import stored_user


async def _user_with_pending(
    conn: Connection, vault: Vault, pending: str, until: datetime
) -> uuid.UUID:
    uid = uuid.uuid4()
    return await stored_user(
        conn, id=uid,
        email=await vault.seal(uid, f"{uid}@example.com", purpose=EMAIL),
        name=await vault.seal(uid, "Someone", purpose=NAME),
        pending_email=await vault.seal(uid, pending, purpose=PENDING_EMAIL),
        pending_email_index=uuid.uuid4().bytes, pending_email_until=until,
        pending_change=uuid.uuid4(),
    )  # fmt: skip


async def test_an_expired_pending_address_is_forgotten_and_the_card_republished(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    now = datetime.now(UTC)
    async with pool.acquire() as conn:
        expired = await _user_with_pending(conn, vault, "late@example.com", now - timedelta(1))
        waiting = await _user_with_pending(conn, vault, "soon@example.com", now + timedelta(1))

    expiry = PendingAddressExpiry(pool, vault, interval_seconds=3600)
    assert await expiry.round() is False  # one user cleared: no more waiting
    async with pool.acquire() as conn:
        rows = {
            r["id"]: r
            for r in await conn.fetch(
                "SELECT id, pending_email, pending_email_index, pending_email_until,"
                " pending_change FROM users"
            )
        }
        queued = [
            parse_event(decode_envelope(r["value"]))
            for r in await conn.fetch("SELECT value FROM bus_outbox ORDER BY seq")
        ]
    assert tuple(rows[expired].values())[1:] == (None, None, None, None)
    assert None not in tuple(rows[waiting].values())
    assert [type(e) for e in queued] == [ProfileUpdated, ContactCardChanged]
    updated, card = queued
    assert isinstance(updated, ProfileUpdated)
    assert isinstance(card, ContactCardChanged)
    assert (updated.user_id, updated.fields) == (expired, ("pending_email",))
    opened = await open_card(vault, card)
    assert (opened.user_id, opened.pending_email, opened.pending_change) == (expired, None, None)

    assert await expiry.round() is False
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM bus_outbox") == 2  # nothing again
