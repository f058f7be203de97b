"""A suppression is kept as long as it is asserted (recorded again, or its address held
by an account) and for its period after that (retention.toml, ``suppression_list``),
then goes, and the operators' records of a "stop all email" request go with it. The
real store and Sender on PostgreSQL, with a capturing transport."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from services.notifier import handlers, store
from services.notifier.bootstrap import MIGRATIONS
from shared.db.migrations import apply_migrations
from shared.events.catalogue.deletion import EraseSubject
from shared.vault import Vault
from tests.integration.notifier.support import sealed_contact, send_all
from tests.support.migrations import split_at

DAYS = 3650  # retention.toml: suppression_list


def _address() -> str:
    return f"p-{uuid.uuid4().hex[:12]}@example.org"


async def _card(pool: asyncpg.Pool, vault: Vault, uid: uuid.UUID, address: str) -> None:
    contact = await sealed_contact(vault, uid, address, datetime.now(UTC))
    async with pool.acquire() as conn, conn.transaction():
        await store.upsert_contact(conn, contact)


async def _suppress(pool: asyncpg.Pool, vault: Vault, address: str, source: str) -> None:
    async with pool.acquire() as conn:
        await store.suppress(conn, handlers.email_index(vault, address), "all", source)


async def _asserted(pool: asyncpg.Pool, vault: Vault, address: str, days_ago: float) -> None:
    """The address's suppressions last asserted that long ago."""
    await pool.execute(
        "UPDATE suppressions SET asserted_at = now() - make_interval(days => $2),"
        " created_at = now() - make_interval(days => $2) WHERE email_index = $1",
        handlers.email_index(vault, address),
        days_ago,
    )


async def _suppressed(pool: asyncpg.Pool, vault: Vault, address: str) -> bool:
    return bool(
        await pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM suppressions WHERE email_index = $1)",
            handlers.email_index(vault, address),
        )
    )


async def _references(pool: asyncpg.Pool, vault: Vault, *addresses: str) -> list[str | None]:
    """Per address, the reference of the operators' record of it (None: no record)."""
    refs = []
    for address in addresses:
        refs.append(
            await pool.fetchval(
                "SELECT request_reference FROM operator_suppressions WHERE email_index = $1",
                handlers.email_index(vault, address),
            )
        )
    return refs


async def _sweep(pool: asyncpg.Pool) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await store.forget_lapsed_suppressions(conn)


async def _email(pool: asyncpg.Pool, vault: Vault, uid: uuid.UUID) -> str:
    """The outcome of an account email to the user, sent through the real Sender."""
    notice = uuid.uuid4()
    await pool.execute(
        "INSERT INTO notices (notice_id, template, category, audience, params, channels,"
        " source, status) VALUES ($1, 'request_reply', 'transactional', 'listed', $2,"
        " '{email}', 'test', 'fanned_out')",
        notice,
        {"request_id": "r-1"},
    )
    await pool.execute("INSERT INTO deliveries (notice_id, user_id) VALUES ($1, $2)", notice, uid)
    await send_all(pool, vault, {})
    return str(await pool.fetchval("SELECT outcome FROM deliveries WHERE notice_id = $1", notice))


async def _erase(pool: asyncpg.Pool, vault: Vault, uid: uuid.UUID) -> None:
    command = EraseSubject(request_id=uuid.uuid4(), subject_id=uid, confirm_to_subject=False)
    async with pool.acquire() as conn, conn.transaction():
        await handlers.start_erasure(conn, vault, command)
    assert not await pool.fetchval("SELECT count(*) FROM contacts WHERE user_id = $1", uid)


async def test_a_suppression_nobody_holds_goes_when_its_period_ends_and_works_until_then(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    lapsed, kept = _address(), _address()
    await _suppress(pool, vault, lapsed, "page")
    await _suppress(pool, vault, kept, "one_click")
    await _asserted(pool, vault, lapsed, DAYS + 1)
    await _asserted(pool, vault, kept, DAYS - 1)
    await _sweep(pool)
    assert not await _suppressed(pool, vault, lapsed)
    assert await _suppressed(pool, vault, kept)

    # Within its period it stops every email to whoever takes the address; past it,
    # nothing of it is left.
    newcomer, returning = uuid.uuid4(), uuid.uuid4()
    await _card(pool, vault, newcomer, kept)
    await _card(pool, vault, returning, lapsed)
    assert await _email(pool, vault, newcomer) == "suppressed"
    assert await _email(pool, vault, returning) == "sent"


async def test_a_suppression_lasts_while_its_address_is_held_and_its_period_after(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    uid, address = uuid.uuid4(), _address()
    await _card(pool, vault, uid, address)
    await _suppress(pool, vault, address, "page")
    await _asserted(pool, vault, address, 2 * DAYS)  # asked long ago, the address in use since
    await _sweep(pool)
    assert await _suppressed(pool, vault, address)
    assert await _email(pool, vault, uid) == "suppressed"

    # The erasure is the last time an account held the address: its period starts there.
    await _erase(pool, vault, uid)
    await _sweep(pool)
    assert await _suppressed(pool, vault, address)
    await _asserted(pool, vault, address, DAYS - 1)
    await _sweep(pool)
    assert await _suppressed(pool, vault, address)
    await _asserted(pool, vault, address, DAYS + 1)
    await _sweep(pool)
    assert not await _suppressed(pool, vault, address)


async def test_a_suppression_asserted_again_or_left_by_its_holder_starts_its_period_again(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    clicked_again, left = _address(), _address()
    await _suppress(pool, vault, clicked_again, "one_click")
    await _asserted(pool, vault, clicked_again, DAYS + 1)
    await _suppress(pool, vault, clicked_again, "mailto")  # the person asks once more

    uid = uuid.uuid4()
    await _card(pool, vault, uid, left)
    await _suppress(pool, vault, left, "page")
    await _asserted(pool, vault, left, DAYS + 1)
    await _card(pool, vault, uid, _address())  # the account moves to another address

    await _sweep(pool)
    assert await _suppressed(pool, vault, clicked_again)
    assert await _suppressed(pool, vault, left)


async def test_an_operators_record_of_a_request_goes_with_its_suppression_and_not_before(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    person, first, moved = uuid.uuid4(), _address(), _address()
    await _card(pool, vault, person, first)
    async with pool.acquire() as conn:
        assert await store.suppress_all_by_operator(conn, person, "op-1", "ZD-90")
    # Recorded long ago, for an address held since before then.
    await pool.execute("UPDATE contacts SET email_since = now() - interval '21 years'")
    await pool.execute("UPDATE operator_suppressions SET created_at = now() - interval '20 years'")
    await _asserted(pool, vault, first, 2 * DAYS)
    await _sweep(pool)
    assert await _references(pool, vault, first) == ["ZD-90"]

    # Still in force, the request follows its person to their next address.
    await _card(pool, vault, person, moved)
    assert await _suppressed(pool, vault, moved)
    assert await _references(pool, vault, first, moved) == ["ZD-90", "ZD-90"]
    assert await _email(pool, vault, person) == "suppressed"

    # The old address was left at the move: its period, then it goes with its record.
    await _sweep(pool)
    assert await _references(pool, vault, first) == ["ZD-90"]
    await _asserted(pool, vault, first, DAYS + 1)
    await _sweep(pool)
    assert not await _suppressed(pool, vault, first)
    assert await _references(pool, vault, first, moved) == [None, "ZD-90"]

    # The person is erased: the period of their last address, then nothing is left.
    await _erase(pool, vault, person)
    await _asserted(pool, vault, moved, DAYS - 1)
    await _sweep(pool)
    assert await _references(pool, vault, moved) == ["ZD-90"]
    await _asserted(pool, vault, moved, DAYS + 1)
    await _sweep(pool)
    assert not await _suppressed(pool, vault, moved)
    assert await pool.fetchval("SELECT count(*) FROM operator_suppressions") == 0


async def test_suppressions_recorded_before_the_upgrade_count_their_period_from_it(
    scratch_dsn: str,
) -> None:
    """Nobody knows when such an address was last held: not before the upgrade."""
    before, after = split_at("notifier", MIGRATIONS, "027_suppression_periods")
    index = b"index-of-an-old-address"
    conn = await asyncpg.connect(scratch_dsn)
    try:
        await apply_migrations(conn, before)
        await conn.execute(
            "INSERT INTO suppressions (email_index, category, source, created_at)"
            " VALUES ($1, 'all', 'operator', now() - interval '20 years')",
            index,
        )
        await conn.execute(
            "INSERT INTO operator_suppressions (email_index, operator_id, request_reference,"
            " created_at) VALUES ($1, 'op-5', 'ZD-81', now() - interval '20 years')",
            index,
        )
        upgraded_at = await conn.fetchval("SELECT now()")
        await apply_migrations(conn, after)
        asserted = await conn.fetchval(
            "SELECT asserted_at FROM suppressions WHERE email_index = $1", index
        )
        assert asserted - upgraded_at < timedelta(minutes=1)
        async with conn.transaction():
            await store.forget_lapsed_suppressions(conn)
        assert await conn.fetchval("SELECT count(*) FROM suppressions") == 1
        assert await conn.fetchval("SELECT count(*) FROM operator_suppressions") == 1
    finally:
        await conn.close()


async def test_a_replaced_address_kept_for_its_one_email_holds_its_suppression_until_it_goes(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    """A replaced address is kept (previous_addresses) until its one email's outcome: held
    until then, its suppression's period starts when that row goes, not at the move."""
    uid, address = uuid.uuid4(), _address()
    await _suppress(pool, vault, address, "page")
    await pool.execute(
        "INSERT INTO previous_addresses (notice_id, user_id, email_index, email)"
        " VALUES ($1, $2, $3, '\\x00')",
        uuid.uuid4(),
        uid,
        handlers.email_index(vault, address),
    )
    await _asserted(pool, vault, address, DAYS + 1)  # the move, long ago
    await _sweep(pool)
    assert await _suppressed(pool, vault, address)  # held by the kept address

    await pool.execute("DELETE FROM previous_addresses WHERE user_id = $1", uid)
    await _sweep(pool)
    assert await _suppressed(pool, vault, address)  # its period starts now
