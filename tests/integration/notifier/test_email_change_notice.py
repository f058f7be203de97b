"""An email change is told to the address it replaced, once, and that address is then
forgotten: the real handler and Sender on PostgreSQL, with a capturing transport."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from services.notifier import handlers, store
from services.notifier.config import NotifierSettings
from services.notifier.mailer import Wire
from services.notifier.sender import Sender, Wake
from shared.vault import Vault
from tests.integration.notifier.support import Capture, sealed_contact, until


async def test_the_replaced_address_is_told_once_and_then_forgotten(pool: asyncpg.Pool) -> None:
    config = NotifierSettings(environment="test")
    vault = await Vault.connect(config, pool)
    uid, first = uuid.uuid4(), datetime.now(UTC) - timedelta(days=1)
    old, new = "before@example.org", "after@example.org"

    async def card(email: str, at: datetime) -> None:
        """What the contacts handler does with a card (``Handlers.on_contacts``)."""
        contact = await sealed_contact(vault, uid, email, at)
        async with pool.acquire() as conn, conn.transaction():
            await handlers.tell_replaced_address(conn, contact)
            await store.upsert_contact(conn, contact)

    await card(old, first)
    await card(old, first + timedelta(hours=1))  # a new name, say: the same address
    assert await pool.fetchval("SELECT count(*) FROM notices") == 0
    await card(new, first + timedelta(hours=2))
    await card(new, first + timedelta(hours=3))  # told once, not at every later card
    assert await pool.fetchval("SELECT count(*) FROM previous_addresses") == 1
    notice = await pool.fetchrow("SELECT template, recipient, category FROM notices")
    assert notice is not None
    assert dict(notice) == {
        "template": "email_changed", "recipient": "previous", "category": "account_security"
    }  # fmt: skip

    box: list[Wire] = []
    sender = Sender(config, pool, vault, lambda: Capture(box, {}), Wake())
    task = asyncio.create_task(sender.run())
    try:
        await until(lambda: _done(pool))
    finally:
        sender.stop()
        await task
        await vault.close()
    assert [w.recipient for w in box] == [old]  # not the new address, which changed it
    assert b"Subject: The email address of your iMT account was changed" in box[0].data
    assert b"contact us" in box[0].data
    # Kept for that one email only: no copy of the replaced address is left.
    assert await pool.fetchval("SELECT count(*) FROM previous_addresses") == 0
    old_index = handlers.email_index(vault, old)
    assert await pool.fetchval(
        "SELECT count(*) FROM contacts WHERE email_index = $1", old_index
    ) == 0  # fmt: skip


async def test_an_erased_subject_leaves_no_replaced_address(pool: asyncpg.Pool) -> None:
    config = NotifierSettings(environment="test")
    vault = await Vault.connect(config, pool)
    uid = uuid.uuid4()
    try:
        for email, hours in (("one@example.org", 0), ("two@example.org", 1)):
            contact = await sealed_contact(
                vault, uid, email, datetime.now(UTC) + timedelta(hours=hours)
            )
            async with pool.acquire() as conn, conn.transaction():
                await handlers.tell_replaced_address(conn, contact)
                await store.upsert_contact(conn, contact)
        async with pool.acquire() as conn:
            counts = await store.erase_subject_rows(conn, uid)
    finally:
        await vault.close()
    assert counts["previous_addresses"] == 1
    assert await pool.fetchval("SELECT count(*) FROM previous_addresses") == 0


async def _done(pool: asyncpg.Pool) -> bool:
    status = await pool.fetchval("SELECT status FROM deliveries")
    return bool(status == "done")
