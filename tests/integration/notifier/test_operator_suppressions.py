"""A request to stop ALL email, recorded by an operator, follows its person to a new
address, and only its person: an address keeps its suppression after its holder's
erasure, and whoever uses it next asked for nothing. Real PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.notifier import handlers, store
from services.notifier.config import NotifierSettings
from shared.vault import Vault
from tests.integration.notifier.support import sealed_contact


@pytest.fixture
async def vault(pool: asyncpg.Pool) -> AsyncIterator[Vault]:
    opened = await Vault.connect(NotifierSettings(environment="test"), pool)
    yield opened
    await opened.close()


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
