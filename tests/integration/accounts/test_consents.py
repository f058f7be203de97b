"""A user's consent to a recipient on real PostgreSQL (P-18): the choice in force is
the latest recorded, as every export reads it, whatever times the records carry."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.accounts import store
from services.accounts.context import Context
from services.accounts.routes import me
from shared.auth import Claims
from tests.integration.accounts.users import stored_user

PURPOSE = "repairs"


def _user_claims(user_id: uuid.UUID) -> Claims:
    now = int(datetime.now(UTC).timestamp())
    return Claims(sub=str(user_id), sid=str(uuid.uuid4()), kind="user", iat=now, exp=now + 300)


@pytest.mark.promise("P-18")
async def test_a_withdrawal_is_recorded_when_the_grant_in_force_carries_an_earlier_time(
    pool: asyncpg.Pool, ctx: Context
) -> None:
    """``at`` is the database's clock, which may step back: a grant recorded after a
    withdrawal can carry an earlier time. The grant is in force for exports (the latest
    record); a withdrawal judged against the latest time instead was taken as in force
    already, recorded nothing, and the exports went on disclosing the user."""
    recipient_id = uuid.uuid4()
    async with pool.acquire() as conn:
        user_id = await stored_user(conn)
        await conn.execute(
            "INSERT INTO recipients (id, name, kind, purpose, allowed_fields, created_by)"
            " VALUES ($1, $2, 'partner', $3, '{user_id}', $4)",
            recipient_id, f"partner {recipient_id}", PURPOSE, uuid.uuid4(),
        )  # fmt: skip
        # Withdrawn, then granted again once the clock stood an hour earlier.
        for granted, earlier in ((False, timedelta(0)), (True, timedelta(hours=1))):
            await conn.execute(
                "INSERT INTO consents (user_id, recipient_id, purpose, granted, at)"
                " VALUES ($1, $2, $3, $4, now() - $5::interval)",
                user_id, recipient_id, PURPOSE, granted, earlier,
            )  # fmt: skip
        assert await store.consenting_users(conn, recipient_id, PURPOSE) == [user_id]

    withdrawn = await me.set_consent(
        recipient_id, me.ConsentIn(granted=False), _user_claims(user_id), ctx
    )
    assert withdrawn.granted is False
    async with pool.acquire() as conn:
        assert await store.consenting_users(conn, recipient_id, PURPOSE) == []
        choices = await conn.fetch(
            "SELECT granted FROM consents WHERE user_id = $1 ORDER BY id", user_id
        )
    assert [c["granted"] for c in choices] == [False, True, False]
