"""Resealing: every user's card is queued again, sealed, and opens to the user's data."""

from __future__ import annotations

import uuid

import asyncpg

from services.accounts import store
from services.accounts.context import EMAIL, NAME
from services.accounts.reseal_cards import reseal_all
from shared.contact_card import open_card
from shared.events import decode_envelope, parse_event
from shared.events.catalogue.accounts import ContactCardChanged
from shared.events.topics import ACCOUNTS_CONTACTS
from shared.vault import Vault


async def test_every_user_gets_a_sealed_card_in_the_outbox(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    users = {}
    async with pool.acquire() as conn:
        for i in range(5):
            uid, email, name = uuid.uuid4(), f"user{i}@example.com", f"User {i}"
            await store.insert_user(
                conn, id=uid, email_index=uid.bytes,
                email=await vault.seal(uid, email, purpose=EMAIL),
                name=await vault.seal(uid, name, purpose=NAME),
                password_hash="$argon2id$not-a-real-hash", age_band="adult", active=True,
            )  # fmt: skip
            users[uid] = (email, name)
    assert await reseal_all(pool, vault, batch=2) == 5
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT value FROM bus_outbox WHERE topic = $1 ORDER BY seq", ACCOUNTS_CONTACTS.name
        )
    cards = [card_of(r["value"]) for r in rows]
    assert sorted(c.user_id for c in cards) == sorted(users)
    for card in cards:
        assert users[card.user_id][0].encode() not in card.email  # sealed, not in clear
        opened = await open_card(vault, card)
        assert (opened.email, opened.name) == users[card.user_id]


def card_of(raw: bytes) -> ContactCardChanged:
    event = parse_event(decode_envelope(raw))
    assert isinstance(event, ContactCardChanged)
    return event
