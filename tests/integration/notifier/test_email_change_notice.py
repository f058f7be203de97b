"""An email change is told to the address it replaced, once per change, and that
address is then forgotten: the real handler and Sender on PostgreSQL, with a capturing
transport."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import asyncpg

from services.notifier import handlers, store
from shared.vault import Vault
from tests.integration.notifier.support import sealed_contact, send_all

A, B = "before@example.org", "after@example.org"
T0 = datetime.now(UTC) - timedelta(days=1)
Card = Callable[[str, datetime], Awaitable[None]]


def cards(pool: asyncpg.Pool, vault: Vault, uid: uuid.UUID) -> Card:
    async def card(email: str, at: datetime) -> None:
        """What the contacts handler does with a card (``Handlers.on_contacts``)."""
        contact = await sealed_contact(vault, uid, email, at)
        async with pool.acquire() as conn, conn.transaction():
            await handlers.tell_replaced_address(conn, contact)
            await store.upsert_contact(conn, contact)

    return card


async def _kept(pool: asyncpg.Pool) -> int:
    return int(await pool.fetchval("SELECT count(*) FROM previous_addresses"))


async def test_each_change_is_told_to_the_address_it_replaced_then_forgotten(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    card = cards(pool, vault, uuid.uuid4())
    await card(A, T0)
    await card(A, T0 + timedelta(hours=1))  # a new name, say: the same address
    assert await pool.fetchval("SELECT count(*) FROM notices") == 0
    await card(B, T0 + timedelta(hours=2))
    await card(B, T0 + timedelta(hours=3))  # told once, not at every later card
    notice = await pool.fetchrow("SELECT template, recipient, category FROM notices")
    assert notice is not None
    assert dict(notice) == {
        "template": "email_changed", "recipient": "previous", "category": "account_security"
    }  # fmt: skip

    box = await send_all(pool, vault, {})
    assert [w.recipient for w in box] == [A]  # not the new address, which changed it
    assert b"Subject: The email address of your iMT account was changed" in box[0].data
    assert b"contact us" in box[0].data
    assert await _kept(pool) == 0  # kept for that one email only

    # Back, and away again: every change is told, each to the address it replaced.
    await card(A, T0 + timedelta(hours=4))
    assert [w.recipient for w in await send_all(pool, vault, {})] == [B]
    await card(B, T0 + timedelta(hours=5))
    assert [w.recipient for w in await send_all(pool, vault, {})] == [A]
    assert await _kept(pool) == 0


async def test_a_change_undone_before_it_was_told_is_not_told(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    """A to B, then back to A before any email went: A is the account's address again
    and is not told it no longer is; B, replaced in turn, is told."""
    card = cards(pool, vault, uuid.uuid4())
    await card(A, T0)
    await card(B, T0 + timedelta(hours=1))
    await card(A, T0 + timedelta(hours=2))
    box = await send_all(pool, vault, {})
    assert [w.recipient for w in box] == [B]
    outcomes = await pool.fetch("SELECT outcome, reason FROM deliveries ORDER BY id")
    assert [r["outcome"] for r in outcomes] == ["suppressed", "sent"]
    assert await _kept(pool) == 0


async def test_an_older_card_replayed_tells_no_one_and_changes_nothing(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    uid = uuid.uuid4()
    card = cards(pool, vault, uid)
    await card(A, T0)
    await card(B, T0 + timedelta(hours=2))
    await card(A, T0 + timedelta(hours=1))  # a record from before B, read again
    assert await pool.fetchval("SELECT count(*) FROM notices") == 1
    held = await pool.fetchval("SELECT email_index FROM contacts WHERE user_id = $1", uid)
    assert held == handlers.email_index(vault, B)


async def test_a_failed_email_keeps_the_address_for_a_replay_then_for_so_long_only(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    card = cards(pool, vault, uuid.uuid4())
    await card(A, T0)
    await card(B, T0 + timedelta(hours=1))
    box = await send_all(pool, vault, {A: 550})
    assert box == []
    assert await pool.fetchval("SELECT status FROM deliveries") == "dead"
    assert await _kept(pool) == 1  # a replay of the dead letter can still send it
    async with pool.acquire() as conn:
        assert await store.forget_replaced_addresses(conn) is None  # not old enough
        await conn.execute(
            "UPDATE previous_addresses SET created_at = now() - make_interval(days => $1)",
            store.REPLACED_ADDRESS_DAYS + 1,
        )
        assert await store.forget_replaced_addresses(conn) == 1
    assert await _kept(pool) == 0


async def test_an_erased_subject_leaves_no_replaced_address(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    uid = uuid.uuid4()
    card = cards(pool, vault, uid)
    await card(A, T0)
    await card(B, T0 + timedelta(hours=1))
    async with pool.acquire() as conn:
        counts = await store.erase_subject_rows(conn, uid)
    assert counts["previous_addresses"] == 1
    assert await _kept(pool) == 0
