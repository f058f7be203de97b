"""A request to stop ALL email, recorded by an operator, follows its person to a new
address, and only its person: an address keeps its suppression after its holder's
erasure, and whoever uses it next asked for nothing. Real PostgreSQL."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from services.notifier import handlers, store
from services.notifier.bootstrap import MIGRATIONS
from shared.db.migrations import apply_migrations
from shared.vault import Vault
from tests.integration.notifier.support import sealed_contact
from tests.support.migrations import split_at


async def _card(pool: asyncpg.Pool, vault: Vault, uid: uuid.UUID, address: str) -> None:
    contact = await sealed_contact(vault, uid, address, datetime.now(UTC))
    async with pool.acquire() as conn, conn.transaction():
        await store.upsert_contact(conn, contact)


async def _suppressed(pool: asyncpg.Pool, vault: Vault, address: str) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM suppressions WHERE email_index = $1"
            " AND category = 'all')",
            handlers.email_index(vault, address),
        )
    )


def _address() -> str:
    return f"s-{uuid.uuid4().hex[:12]}@example.org"


async def test_the_persons_request_follows_them_and_not_the_next_holder_of_the_address(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    asked, first, moved = uuid.uuid4(), _address(), _address()
    await _card(pool, vault, asked, first)
    async with pool.acquire() as conn:
        assert await store.suppress_all_by_operator(conn, asked, "op-1", "ZD-77")
    await _card(pool, vault, asked, moved)
    assert await _suppressed(pool, vault, moved)  # the person's request, at their new address

    # The account is erased; the address stays suppressed, as an address.
    await pool.execute("DELETE FROM contacts WHERE user_id = $1", asked)
    await pool.execute(
        "UPDATE suppressions SET created_at = now() - interval '1 day' WHERE email_index = $1",
        handlers.email_index(vault, moved),
    )
    await pool.execute(
        "UPDATE operator_suppressions SET created_at = now() - interval '1 day'"
        " WHERE request_reference = 'ZD-77'"
    )
    newcomer, elsewhere = uuid.uuid4(), _address()
    await _card(pool, vault, newcomer, moved)  # someone else signs up with it, later
    assert await _suppressed(pool, vault, moved)
    await _card(pool, vault, newcomer, elsewhere)
    assert not await _suppressed(pool, vault, elsewhere)  # they asked for nothing


async def test_an_operator_suppression_is_recorded_with_its_reference_not_the_person(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    uid, address = uuid.uuid4(), _address()
    async with pool.acquire() as conn:
        assert not await store.suppress_all_by_operator(conn, uid, "op-2", "ZD-78")  # no card
    await _card(pool, vault, uid, address)
    async with pool.acquire() as conn:
        assert await store.suppress_all_by_operator(conn, uid, "op-2", "ZD-78")
    row = await pool.fetchrow(
        "SELECT email_index, operator_id FROM operator_suppressions WHERE request_reference = $1",
        "ZD-78",
    )
    assert row is not None
    assert (row["email_index"], row["operator_id"]) == (
        handlers.email_index(vault, address),
        "op-2",
    )
    assert str(uid) not in str(dict(row))
    assert datetime.now(UTC) - timedelta(minutes=1) < await pool.fetchval(
        "SELECT created_at FROM operator_suppressions WHERE request_reference = 'ZD-78'"
    )


async def test_an_older_account_taking_a_suppressed_address_did_not_ask_for_anything(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    """The account existed before the request, but took the address only after it: the
    request was its previous holder's, and stays with the address."""
    older, holder = uuid.uuid4(), uuid.uuid4()
    first, taken, moved = _address(), _address(), _address()
    await _card(pool, vault, older, first)
    await _card(pool, vault, holder, taken)
    async with pool.acquire() as conn:
        assert await store.suppress_all_by_operator(conn, holder, "op-3", "ZD-79")
    await pool.execute("DELETE FROM contacts WHERE user_id = $1", holder)  # erased
    await _card(pool, vault, older, taken)
    await _card(pool, vault, older, moved)
    assert await _suppressed(pool, vault, taken)
    assert not await _suppressed(pool, vault, moved)


async def test_the_request_follows_through_an_address_that_had_opted_out_before(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    """The address moved to had opted out of all email long ago, by itself: the
    request is recorded for it anyway, so it follows the person to the next one."""
    uid, first, opted_out, third = uuid.uuid4(), _address(), _address(), _address()
    await pool.execute(
        "INSERT INTO suppressions (email_index, category, source, created_at)"
        " VALUES ($1, 'all', 'page', now() - interval '1 year')",
        handlers.email_index(vault, opted_out),
    )
    await _card(pool, vault, uid, first)
    async with pool.acquire() as conn:
        assert await store.suppress_all_by_operator(conn, uid, "op-4", "ZD-80")
    await _card(pool, vault, uid, opted_out)
    await _card(pool, vault, uid, third)
    assert await _suppressed(pool, vault, third)
    recorded = await pool.fetch(
        "SELECT operator_id, request_reference FROM operator_suppressions WHERE email_index = $1",
        handlers.email_index(vault, third),
    )
    assert [tuple(r) for r in recorded] == [("op-4", "ZD-80")]


async def test_the_upgrade_lets_requests_recorded_before_it_follow_their_person(
    scratch_dsn: str,
) -> None:
    """A request recorded before the upgrade, its person's card changed since (the
    date the account was first known was taken from that later card): it still follows
    them to their next address."""
    before, after = split_at("notifier", MIGRATIONS, "019_contacts_email_since")
    uid, old, new = uuid.uuid4(), b"index-of-the-old-address", b"index-of-the-new-address"
    conn = await asyncpg.connect(scratch_dsn)
    try:
        await apply_migrations(conn, before)
        await conn.execute(
            "INSERT INTO contacts (user_id, email_index, email, name, age_band, known_since)"
            " VALUES ($1, $2, '', '', 'adult', now())",
            uid,
            old,
        )
        for statement in (
            "INSERT INTO suppressions (email_index, category, source, created_at)"
            " VALUES ($1, 'all', 'operator', now() - interval '1 day')",
            "INSERT INTO operator_suppressions (email_index, operator_id, request_reference,"
            " created_at) VALUES ($1, 'op-5', 'ZD-81', now() - interval '1 day')",
        ):
            await conn.execute(statement, old)
        await apply_migrations(conn, after)
        moved = store.SealedContact(
            user_id=uid, email_index=new, email=b"", name=b"", guardian_index=None,
            guardian_email=None, locale="en", age_band="adult", marketing_email=False,
            tracking_opt_out=False, active=True, card_changed_at=datetime.now(UTC),
        )  # fmt: skip
        await store.upsert_contact(conn, moved)
        source = await conn.fetchval(
            "SELECT source FROM suppressions WHERE email_index = $1 AND category = 'all'", new
        )
    finally:
        await conn.close()
    assert source == "operator"
