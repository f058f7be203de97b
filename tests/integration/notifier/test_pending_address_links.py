"""A link confirming a new address reaches that address only while the contact card
still holds the change it confirms: a link for an address the user replaced before the
email went is never mailed to the address that replaced it. The real handlers and
Sender on PostgreSQL, with a capturing transport."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from services.notifier import handlers, store
from shared.events.catalogue.notifier import SendNotice
from shared.vault import Vault
from tests.integration.notifier.support import sealed_contact, send_all

CURRENT, FIRST, SECOND = "me@example.org", "first@example.org", "second@example.org"
T0 = datetime.now(UTC) - timedelta(hours=1)


async def _card(
    pool: asyncpg.Pool, vault: Vault, uid: uuid.UUID, pending: str | None, at: datetime
) -> uuid.UUID:
    """A card naming ``pending`` as the address to confirm (None: no change waits); the
    change's id."""
    change = uuid.uuid4()
    contact = await sealed_contact(vault, uid, CURRENT, at)
    if pending is not None:
        contact = dataclasses.replace(
            contact,
            pending_index=handlers.email_index(vault, pending),
            pending_email=await vault.seal(uid, pending, purpose=handlers.PENDING_PURPOSE),
            pending_change=change,
        )
    async with pool.acquire() as conn, conn.transaction():
        await store.upsert_contact(conn, contact)
    return change


async def _link_notice(
    pool: asyncpg.Pool, uid: uuid.UUID, change: uuid.UUID, token: str, at: datetime
) -> None:
    command = SendNotice(
        notice_id=uuid.uuid4(),
        template="verify_new_email",
        category="transactional",
        audience="listed",
        user_ids=(uid,),
        params={
            "link": f"https://www.phonedoctorbiz.com/verify-email#{token}",
            "change": str(change),
        },
        channels=("email", "inbox"),
        card_changed_at=at,
    )
    notice = handlers.notice_for(command, "accounts")
    assert notice is not None
    assert notice.recipient == "pending"
    async with pool.acquire() as conn, conn.transaction():
        await handlers.accept_notice(conn, notice)


async def test_a_link_goes_only_to_the_address_its_change_named(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    uid = uuid.uuid4()
    first = await _card(pool, vault, uid, FIRST, T0)
    await _link_notice(pool, uid, first, "token-for-first", T0)
    # Replaced before the first link went: the card now names the second address.
    second = await _card(pool, vault, uid, SECOND, T0 + timedelta(minutes=1))
    await _link_notice(pool, uid, second, "token-for-second", T0 + timedelta(minutes=1))

    box = await send_all(pool, vault, {})
    assert [w.recipient for w in box] == [SECOND]
    mailed = box[0].data.decode()
    assert "token-for-second" in mailed
    assert "token-for-first" not in mailed
    assert "Hello there," in mailed
    assert "Ada" not in mailed  # the account's name is not told to the address's holder
    outcomes = await pool.fetch(
        "SELECT n.params->>'change' AS change, d.status, d.reason FROM deliveries d"
        " JOIN notices n USING (notice_id) ORDER BY d.id"
    )
    assert [(r["change"], r["status"]) for r in outcomes] == [
        (str(first), "dead"),
        (str(second), "done"),
    ]
    assert outcomes[0]["reason"] == "the address to confirm was replaced or withdrawn since"
    assert await pool.fetchval("SELECT count(*) FROM inbox_items") == 0  # never the inbox


async def test_a_link_for_a_withdrawn_change_goes_nowhere(pool: asyncpg.Pool, vault: Vault) -> None:
    uid = uuid.uuid4()
    change = await _card(pool, vault, uid, FIRST, T0)
    await _link_notice(pool, uid, change, "token-for-first", T0)
    await _card(pool, vault, uid, None, T0 + timedelta(minutes=1))  # withdrawn
    assert await send_all(pool, vault, {}) == []
    reason = await pool.fetchval("SELECT reason FROM deliveries WHERE status = 'dead'")
    assert reason == "the address to confirm was replaced or withdrawn since"
