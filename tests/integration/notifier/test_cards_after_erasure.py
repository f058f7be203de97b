"""A contact card read once the account's erasure here began changes nothing.

Such a card is a dead letter of ``accounts.contacts`` replayed after the tombstone, or a
record redelivered late. Its subject's vault key is not shredded yet (the deletion
service shreds it once every store answered), so it still opens. Read after the
erasure, it must not bring the contact back. Read while the erasure confirms (its final
"your data was deleted" email still to go), it must not change the contact that email
goes to, nor take its tombstone mark away. The real contacts handler and Sender on
PostgreSQL, with a capturing transport.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from services.notifier import handlers, store
from shared.bus.delivery import Delivery, Tombstone
from shared.contact_card import OpenCard, seal_card
from shared.events import envelope_for
from shared.events.catalogue.deletion import EraseSubject
from shared.events.topics import ACCOUNTS_CONTACTS
from shared.vault import Vault
from tests.integration.notifier.support import sealed_contact, send_all

ADDRESS, OTHER = "leaving@example.org", "elsewhere@example.org"
T0 = datetime.now(UTC) - timedelta(days=1)


async def _card(vault: Vault, uid: uuid.UUID, email: str, changed_at: datetime) -> Delivery:
    """A v2 card as accounts publishes it on the compacted topic."""
    event = await seal_card(
        vault,
        OpenCard(user_id=uid, email=email, name="Ada", age_band="adult", changed_at=changed_at),
    )
    envelope = envelope_for(event, source="accounts", subject=str(uid))
    return Delivery(envelope, event, str(uid).encode(), ACCOUNTS_CONTACTS.name, 0, 0)


def _tombstone(uid: uuid.UUID) -> Tombstone:
    return Tombstone(str(uid).encode(), ACCOUNTS_CONTACTS.name, 0, 1)


async def _read(pool: asyncpg.Pool, vault: Vault, *items: Delivery | Tombstone) -> None:
    """What the contacts consumer does with a batch (in its transaction)."""
    async with pool.acquire() as conn, conn.transaction():
        await handlers.Handlers(vault).on_contacts(conn, items)


async def _contact(pool: asyncpg.Pool, uid: uuid.UUID) -> asyncpg.Record | None:
    return await pool.fetchrow(
        "SELECT email_index, erase_pending, card_changed_at FROM contacts WHERE user_id = $1",
        uid,
    )


async def _erase(pool: asyncpg.Pool, vault: Vault, uid: uuid.UUID) -> EraseSubject:
    command = EraseSubject(request_id=uuid.uuid4(), subject_id=uid)
    async with pool.acquire() as conn, conn.transaction():
        await handlers.start_erasure(conn, vault, command)
    return command


async def test_a_card_read_after_the_erasure_brings_nothing_back(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    uid = uuid.uuid4()
    card = await _card(vault, uid, ADDRESS, T0)
    await _read(pool, vault, card)
    command = await _erase(pool, vault, uid)
    await _read(pool, vault, _tombstone(uid))
    assert [w.recipient for w in await send_all(pool, vault, {})] == [ADDRESS]
    state = await pool.fetchval(
        "SELECT state FROM erasures WHERE request_id = $1", command.request_id
    )
    assert state == "done"
    assert await _contact(pool, uid) is None
    notices = await pool.fetchval("SELECT count(*) FROM notices")

    # The dead letter of that card replayed after the tombstone, a newer card with
    # another address redelivered late: each read after the erasure.
    newer = await _card(vault, uid, OTHER, T0 + timedelta(hours=1))
    await _read(pool, vault, card)
    await _read(pool, vault, newer)
    assert await _contact(pool, uid) is None
    assert await pool.fetchval("SELECT count(*) FROM notices") == notices  # no email_changed
    assert await pool.fetchval("SELECT count(*) FROM previous_addresses") == 0
    assert await send_all(pool, vault, {}) == []

    # Any caller of the store is refused too, not the handler's only.
    contact = await sealed_contact(vault, uid, OTHER, T0 + timedelta(hours=2))
    async with pool.acquire() as conn, conn.transaction():
        await store.upsert_contact(conn, contact)
    assert await _contact(pool, uid) is None


async def test_a_card_read_while_the_erasure_confirms_leaves_its_email_as_it_was(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    """The tombstone came, the final email waits (the mail server is away): a card read
    now neither takes the tombstone's mark away (other notices would reach the address
    again) nor changes the address the final email goes to, and tells no one."""
    uid = uuid.uuid4()
    await _read(pool, vault, await _card(vault, uid, ADDRESS, T0))
    await _read(pool, vault, _tombstone(uid))
    command = await _erase(pool, vault, uid)
    before = await _contact(pool, uid)
    assert before is not None
    assert before["erase_pending"] is True

    await _read(pool, vault, await _card(vault, uid, ADDRESS, T0))  # the same card, replayed
    await _read(pool, vault, await _card(vault, uid, OTHER, T0 + timedelta(hours=1)))
    assert await _contact(pool, uid) == before
    assert await pool.fetchval("SELECT count(*) FROM previous_addresses") == 0
    templates = await pool.fetch("SELECT template FROM notices")
    assert [r["template"] for r in templates] == ["erasure_done"]

    # A notice for everyone fanned out now leaves the tombstoned contact out.
    everyone = store.Notice(
        notice_id=uuid.uuid4(), template="service_announcement",
        category="service_announcement", audience="all", channels=("email", "inbox"),
        params={"subject": "S", "message": "M"}, recipient="user", pinned=False,
        source="test",
    )  # fmt: skip
    async with pool.acquire() as conn, conn.transaction():
        await handlers.accept_notice(conn, everyone)

    wires = await send_all(pool, vault, {})
    assert [w.recipient for w in wires] == [ADDRESS]  # the final email, to the held address
    assert b"Your data has been deleted" in wires[0].data
    state = await pool.fetchval(
        "SELECT state FROM erasures WHERE request_id = $1", command.request_id
    )
    assert state == "done"
    assert await _contact(pool, uid) is None
