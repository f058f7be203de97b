"""A password reset asked for while the account's row is held is recorded, not kept in
the API process's memory: a round of the accounts worker mails it once the row is free,
once, with the mailing interval as ever (real PostgreSQL and vault)."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest

from services.accounts.answer_floor import ANSWER_FLOOR_SECONDS
from services.accounts.context import EMAIL_INDEX, Context
from services.accounts.handlers import erase_subject
from services.accounts.pending_resets import PendingResets
from services.accounts.routes import password_reset
from shared.events import decode_envelope, parse_event
from shared.events.catalogue.deletion import EraseSubject
from shared.events.catalogue.notifier import SendNotice
from shared.events.topics import NOTIFIER_COMMANDS
from shared.vault import Vault
from tests.integration.accounts.users import stored_user

HELD = "SELECT 1 FROM users WHERE id = $1 FOR UPDATE"
PENDING = "SELECT count(*) FROM pending_resets WHERE user_id = $1"
LINKS = "SELECT count(*) FROM action_tokens WHERE user_id = $1 AND purpose = 'password_reset'"


async def _mailed(pool: asyncpg.Pool, user_id: uuid.UUID) -> list[SendNotice]:
    rows = await pool.fetch(
        "SELECT value FROM bus_outbox WHERE topic = $1 ORDER BY seq", NOTIFIER_COMMANDS.name
    )
    events = [parse_event(decode_envelope(r["value"])) for r in rows]
    return [
        e
        for e in events
        if isinstance(e, SendNotice) and e.template == "password_reset" and user_id in e.user_ids
    ]


async def _user(pool: asyncpg.Pool, vault: Vault, address: str) -> uuid.UUID:
    async with pool.acquire() as conn:
        return await stored_user(conn, email_index=vault.blind_index(address, purpose=EMAIL_INDEX))


@pytest.mark.promise("P-08")
async def test_a_reset_asked_for_while_the_row_is_held_is_recorded_and_mailed_by_the_worker(
    ctx: Context, pool: asyncpg.Pool, vault: Vault
) -> None:
    address = "held@example.com"
    uid = await _user(pool, vault, address)
    rounds = PendingResets(ctx, interval_seconds=3600)
    async with pool.acquire() as holder, holder.transaction():
        await holder.execute(HELD, uid)  # an export reading the account
        started = time.monotonic()
        answer = await password_reset.request_reset(password_reset.ResetRequest(email=address), ctx)
        took = time.monotonic() - started
        assert answer.status == "reset_link_sent_if_registered"
        assert ANSWER_FLOOR_SECONDS <= took < 4 * ANSWER_FLOOR_SECONDS  # the floor holds
        # Recorded and committed while the row is held: the request's process may go.
        assert await pool.fetchval(PENDING, uid) == 1
        assert await pool.fetchval(LINKS, uid) == 0
        assert await rounds.round() is False  # the row is still held: skipped, kept
        assert await pool.fetchval(PENDING, uid) == 1
        assert await _mailed(pool, uid) == []
    assert await rounds.round() is False  # free now: mailed
    [notice] = await _mailed(pool, uid)
    assert notice.params["link"].endswith(f"/reset-password#token={notice.params['token']}")
    assert (await pool.fetchval(PENDING, uid), await pool.fetchval(LINKS, uid)) == (0, 1)
    assert await rounds.round() is False
    assert len(await _mailed(pool, uid)) == 1  # once


async def test_a_recorded_reset_respects_the_interval_and_goes_with_its_account(
    ctx: Context, pool: asyncpg.Pool, vault: Vault
) -> None:
    recent, erased, gone = [await _user(pool, vault, f"{n}@example.com") for n in range(3)]
    rounds = PendingResets(ctx, interval_seconds=3600)
    # Mailed a moment ago, then asked again while the row was held: the interval holds.
    await password_reset.request_reset(password_reset.ResetRequest(email="0@example.com"), ctx)
    assert len(await _mailed(pool, recent)) == 1
    for uid in (recent, erased, gone):
        await pool.execute("INSERT INTO pending_resets (user_id) VALUES ($1)", uid)
    command = EraseSubject(request_id=uuid.uuid4(), subject_id=erased, retain_categories=())
    async with pool.acquire() as conn, conn.transaction():
        receipt = await erase_subject(conn, vault, command)
    assert receipt.erased["pending_resets"] == 1  # nothing left to mail
    await pool.execute("DELETE FROM users WHERE id = $1", gone)  # a restored snapshot's
    assert await pool.fetchval("SELECT count(*) FROM pending_resets") == 2

    assert await rounds.round() is False
    assert await pool.fetchval("SELECT count(*) FROM pending_resets") == 0
    assert len(await _mailed(pool, recent)) == 1  # not mailed twice within the interval
    assert await _mailed(pool, gone) == []


async def test_replicas_of_the_worker_mail_a_recorded_reset_once(
    ctx: Context, pool: asyncpg.Pool, vault: Vault
) -> None:
    users = [await _user(pool, vault, f"r{n}@example.com") for n in range(20)]
    for uid in users:
        await pool.execute("INSERT INTO pending_resets (user_id) VALUES ($1)", uid)
    replicas = [PendingResets(ctx, interval_seconds=3600) for _ in range(3)]
    await asyncio.gather(*(r.round() for r in replicas))
    await asyncio.gather(*(r.round() for r in replicas))  # any a replica skipped
    assert await pool.fetchval("SELECT count(*) FROM pending_resets") == 0
    for uid in users:
        assert len(await _mailed(pool, uid)) == 1
