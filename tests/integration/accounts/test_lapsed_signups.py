"""Lapsed sign-ups on real PostgreSQL: an account never activated within the lapse
period, with no live link, is handed to the deletion service, and nothing else is."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from services.accounts.lapsed_signups import LapsedSignups, lapsing, still_lapsed
from services.accounts.routes import operators
from shared.config import PlatformSettings
from shared.db.pool import Connection
from shared.events import decode_envelope, parse_event
from shared.events.catalogue.accounts import SignupLapsed
from shared.events.topics import ACCOUNTS_LIFECYCLE
from shared.observability import Problem, problem_type
from shared.vault import Vault
from tests.integration.accounts.users import (
    accounts_context,
    operator_claims,
    stored_deletion_request,
    stored_operator,
    stored_user,
)

LAPSE_DAYS = 30


async def _signed_up(
    conn: Connection, days_ago: float, *, active: bool = False, **columns: object
) -> uuid.UUID:
    user_id = await stored_user(conn, active=active, **columns)
    await conn.execute(
        "UPDATE users SET created_at = now() - make_interval(secs => $2) WHERE id = $1",
        user_id,
        days_ago * 86_400,
    )
    return user_id


async def _token(
    conn: Connection, user_id: uuid.UUID, purpose: str, expires_in_hours: float
) -> None:
    await conn.execute(
        "INSERT INTO action_tokens (token_hash, user_id, purpose, expires_at)"
        " VALUES ($1, $2, $3, now() + make_interval(secs => $4))",
        uuid.uuid4().bytes,
        user_id,
        purpose,
        expires_in_hours * 3600,
    )


async def _lapsed_events(pool: asyncpg.Pool) -> list[SignupLapsed]:
    rows = await pool.fetch(
        "SELECT value FROM bus_outbox WHERE topic = $1 ORDER BY seq", ACCOUNTS_LIFECYCLE.name
    )
    events = [parse_event(decode_envelope(r["value"])) for r in rows]
    return [e for e in events if isinstance(e, SignupLapsed)]


@pytest.mark.promise("P-26")
@pytest.mark.promise("P-13")
async def test_a_round_hands_only_lapsed_sign_ups_to_the_deletion_service(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        # Lapsed: an adult who never verified, a child whose guardian never consented.
        adult = await _signed_up(conn, 31)
        child = await _signed_up(
            conn, 45, age_band="under_13", guardian_email=b"sealed-guardian",
            guardian_consented=False, email_verified=True,
        )  # fmt: skip
        await _token(conn, adult, "verify_email", -24 * 29)  # expired long ago
        await _token(conn, child, "guardian_consent", -1)  # expired an hour ago
        # Lapsed too: a live reset link (anyone may ask for one) defers nothing, nor does
        # an operator's deletion that may never be approved.
        resetting = await _signed_up(conn, 31)
        await _token(conn, resetting, "password_reset", 1)
        pending = await _signed_up(conn, 31)
        await stored_deletion_request(conn, pending, "pending_approval", uuid.uuid4())
        # Kept: too recent; a live verification link; active; a deletion under way.
        recent = await _signed_up(conn, 29)
        linked = await _signed_up(conn, 31)
        await _token(conn, linked, "verify_email", 1)
        active = await _signed_up(conn, 400, active=True, email_verified=True)
        approved = await _signed_up(conn, 31)
        await conn.execute(
            "INSERT INTO deletion_requests (id, user_id, initiated_by, status)"
            " VALUES ($1, $2, 'operator', 'requested')",
            uuid.uuid4(),
            approved,
        )

    sweep = LapsedSignups(pool, LAPSE_DAYS, 3600)
    assert await sweep.round() is False  # fewer than a batch: nothing left for now

    events = await _lapsed_events(pool)
    assert {e.user_id for e in events} == {adult, child, resetting, pending}
    requests = {
        r["user_id"]: r
        for r in await pool.fetch(
            "SELECT id, user_id, status FROM deletion_requests WHERE initiated_by = 'retention'"
        )
    }
    assert set(requests) == {adult, child, resetting, pending}
    assert {e.request_id for e in events} == {r["id"] for r in requests.values()}
    assert {r["status"] for r in requests.values()} == {"requested"}
    tokens = {r["user_id"] for r in await pool.fetch("SELECT user_id FROM action_tokens")}
    assert tokens == {linked}  # the lapsed accounts' links are spent
    async with pool.acquire() as conn:
        assert await lapsing(conn, adult)
        assert await lapsing(conn, child)
        assert await lapsing(conn, pending)
        for kept in (recent, linked, active, approved):
            assert not await lapsing(conn, kept)

    # A second round asks nothing again: the requests are under way.
    await sweep.round()
    assert len(await _lapsed_events(pool)) == 4
    assert await pool.fetchval("SELECT count(*) FROM deletion_requests") == 6


@pytest.mark.promise("P-26")
async def test_an_approval_after_the_lapse_answers_that_the_deletion_is_under_way(
    pool: asyncpg.Pool, vault: Vault, settings: PlatformSettings
) -> None:
    """An operator's request waiting for a second operator keeps no lapsed sign-up (a
    child's, say) from its erasure; approved later, it starts no second deletion."""
    async with pool.acquire() as conn:
        requester = await stored_operator(conn, "requester-password")
        approver = await stored_operator(conn, "approver-password")
        child = await _signed_up(
            conn, 45, age_band="under_13", guardian_email=b"sealed-guardian",
            guardian_consented=False, email_verified=True,
        )  # fmt: skip
        awaiting = await stored_deletion_request(conn, child, "pending_approval", requester)

    assert await LapsedSignups(pool, LAPSE_DAYS, 3600).round() is False
    (lapsed,) = await _lapsed_events(pool)
    assert lapsed.user_id == child

    ctx = accounts_context(settings, pool, vault)
    body = operators.OperatorReauthentication(password="approver-password")
    with pytest.raises(Problem) as refused:
        await operators.approve_user_deletion(awaiting, body, ctx, operator_claims(approver))
    assert (refused.value.status, refused.value.type) == (409, problem_type("deletion-under-way"))
    assert str(lapsed.request_id) in (refused.value.detail or "")
    status = "SELECT status FROM deletion_requests WHERE id = $1"
    assert await pool.fetchval(status, awaiting) == "pending_approval"


async def test_the_lapse_is_checked_again_once_the_accounts_are_locked(
    pool: asyncpg.Pool,
) -> None:
    """The round's first statement picks and locks the accounts; a deletion request
    committed between its snapshot and its lock is not rechecked by PostgreSQL (it is in
    another table). The second look, under the locks, sees it: one deletion at a time."""
    async with pool.acquire() as conn:
        taken = await _signed_up(conn, 31)
        free = await _signed_up(conn, 31)
        # As the first statement saw them; then the user's own request commits.
        await stored_deletion_request(conn, taken, "requested", None)
        async with conn.transaction():
            assert await still_lapsed(conn, LAPSE_DAYS, [taken, free]) == [free]
