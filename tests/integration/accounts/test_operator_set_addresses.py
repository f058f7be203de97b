"""An address an operator gives an account on the user's emailed request (P-24) takes
effect at once, but it is no proof that its mailbox is the owner's: the operator typed
it, and may hold it. So no password-reset link goes to it, however asked for, until the
owner signs in under it with their password; otherwise one support operator could set
an address of their own, reset the password, and then read the account unaudited or
delete it alone (P-07, P-15). Real PostgreSQL and vault."""

from __future__ import annotations

import uuid

import asyncpg
import pytest
from starlette.requests import Request

from services.accounts import links
from services.accounts.context import EMAIL_INDEX, Context
from services.accounts.pending_resets import PendingResets
from services.accounts.reset_links import PURPOSE
from services.accounts.routes import auth, operators, password_reset
from services.accounts.security import verify_password
from shared.events import decode_envelope, parse_event
from shared.events.catalogue.notifier import SendNotice
from shared.events.topics import NOTIFIER_COMMANDS
from shared.observability import Problem
from shared.vault import Vault
from tests.integration.accounts.users import operator_claims, sealed_user

OWNER = "owner@example.com"
TYPED = "typed-by-support@example.com"
PASSWORD = "the owner's own password"
RESET_LINKS = "SELECT count(*) FROM action_tokens WHERE user_id = $1 AND purpose = 'password_reset'"


async def _owner(pool: asyncpg.Pool, vault: Vault) -> uuid.UUID:
    return await sealed_user(pool, vault, OWNER, PASSWORD)


async def _set_by_support(ctx: Context, user_id: uuid.UUID, address: str) -> None:
    change = operators.UserChange(
        email=address, request_reference="TCK-1", purpose="the user asked by email"
    )
    await operators.change_user(user_id, change, ctx, operator_claims(uuid.uuid4(), "support"))


async def _reset_mails(pool: asyncpg.Pool, user_id: uuid.UUID) -> list[str]:
    rows = await pool.fetch(
        "SELECT value FROM bus_outbox WHERE topic = $1 ORDER BY seq", NOTIFIER_COMMANDS.name
    )
    events = [parse_event(decode_envelope(r["value"])) for r in rows]
    return [
        e.template
        for e in events
        if isinstance(e, SendNotice)
        and e.template in ("password_reset", "signup_attempted")
        and user_id in e.user_ids
    ]


async def _sign_in(ctx: Context, email: str) -> None:
    request = Request({"type": "http", "client": ("127.0.0.1", 50000), "headers": []})
    credentials = auth.Credentials(email=email, password=PASSWORD)
    pair, problem = await auth._login(ctx, request, credentials, "user")
    assert problem is None
    assert pair is not None


@pytest.mark.promise("P-08")
async def test_no_reset_link_goes_to_an_address_an_operator_set_until_the_owner_signs_in(
    ctx: Context, pool: asyncpg.Pool, vault: Vault
) -> None:
    user_id = await _owner(pool, vault)
    await _set_by_support(ctx, user_id, TYPED)

    # Asked for at that address (by whoever holds it), offered by a sign-up with it, or
    # recorded while the row was held and mailed by the worker: none is mailed.
    await password_reset.request_reset(password_reset.ResetRequest(email=TYPED), ctx)
    async with pool.acquire() as conn, conn.transaction():
        typed = vault.blind_index(TYPED, purpose=EMAIL_INDEX)
        assert await auth._tell_the_owner(ctx, conn, typed)  # the sign-up's answer is alike
    await pool.execute("INSERT INTO pending_resets (user_id) VALUES ($1)", user_id)
    await PendingResets(ctx, interval_seconds=3600).round()
    assert await pool.fetchval(RESET_LINKS, user_id) == 0
    assert await _reset_mails(pool, user_id) == []

    # The owner, who asked for the address, signs in under it: it is theirs from then on.
    await _sign_in(ctx, TYPED)
    await password_reset.request_reset(password_reset.ResetRequest(email=TYPED), ctx)
    assert await pool.fetchval(RESET_LINKS, user_id) == 1
    assert await _reset_mails(pool, user_id) == ["password_reset"]

    # An operator's next change is unproven again, whoever signed in before.
    await _set_by_support(ctx, user_id, OWNER)
    await password_reset.request_reset(password_reset.ResetRequest(email=OWNER), ctx)
    assert await _reset_mails(pool, user_id) == ["password_reset"]


async def test_a_reset_link_for_an_address_an_operator_set_sets_no_password(
    ctx: Context, pool: asyncpg.Pool, vault: Vault
) -> None:
    """However a link came to be while the address is unproven, it changes nothing."""
    user_id = await _owner(pool, vault)
    await _set_by_support(ctx, user_id, TYPED)
    async with pool.acquire() as conn:
        token = await links.new_action_token(ctx, conn, user_id, PURPOSE)

    completion = password_reset.ResetCompletion(token=token, new_password="the operator's pick")
    with pytest.raises(Problem) as refused:
        await password_reset.complete_reset(completion, ctx)
    assert (refused.value.status, refused.value.type.rsplit("/", 1)[-1]) == (400, "link-invalid")
    stored = await pool.fetchval("SELECT password_hash FROM users WHERE id = $1", user_id)
    assert await verify_password(stored, PASSWORD)
    sessions = "SELECT count(*) FROM sessions WHERE principal_id = $1"
    assert await pool.fetchval(sessions, user_id) == 0
