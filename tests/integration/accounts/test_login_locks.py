"""A login lock (100 consecutive failures) answers alike for an address with an account
and one without, however long ago it was set: watching when the answer changes must not
tell whether an email is registered."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import pytest
from starlette.requests import Request

from services.accounts import links, store
from services.accounts.config import AccountsSettings
from services.accounts.context import EMAIL_INDEX, PENDING_EMAIL, Context
from services.accounts.reset_links import PURPOSE as RESET
from services.accounts.retention import Retention
from services.accounts.routes import auth, operators, password_reset
from services.accounts.throttling import login_key
from shared.vault import Vault
from tests.integration.accounts.users import operator_claims, sealed_user

REGISTERED = "registered@example.com"
UNREGISTERED = "nobody-has-this@example.com"
PASSWORD = "the owner's own password"
WRONG = "a guess that is wrong"


async def _user(pool: asyncpg.Pool, vault: Vault, email: str, **columns: Any) -> uuid.UUID:
    """An account at ``email`` whose password is ``PASSWORD``; ``columns`` replace any."""
    return await sealed_user(pool, vault, email, PASSWORD, **columns)


Answer = tuple[int, str, str | None, dict[str, str] | None]


async def _attempt(ctx: Context, email: str, password: str) -> Answer:
    """The answer to a login, as a caller sees it: status, problem type, detail, headers."""
    request = Request({"type": "http", "client": ("127.0.0.1", 50000), "headers": []})
    credentials = auth.Credentials(email=email, password=password)
    pair, problem = await auth._login(ctx, request, credentials, "user")
    if problem is None:
        assert pair is not None
        return 200, "session", None, None
    return problem.status, problem.type, problem.detail, problem.headers


async def _lock(ctx: Context, pool: asyncpg.Pool, vault: Vault, email: str) -> None:
    """Reach the lockout bound at ``email``: the back-off makes 100 failures take hours,
    so the count is set one below the bound and the failure that reaches it is a login."""
    bound = ctx.settings.accounts_lockout_failures
    await pool.execute(
        "INSERT INTO login_throttle (key, scope, failures, last_failure_at)"
        " VALUES ($1, 'account', $2, now() - interval '1 hour')",
        login_key(vault, "user", email),
        bound - 1,
    )
    status, kind, _, _ = await _attempt(ctx, email, WRONG)
    assert (status, kind.rsplit("/", 1)[-1]) == (401, "invalid-credentials")


async def _past_the_counters_retention(pool: asyncpg.Pool) -> None:
    """Every account counter's last failure (a locked one counts no more) older than the
    fraud_abuse period, then the worker's retention round."""
    settings = AccountsSettings(environment="test")
    aged = await pool.execute(
        "UPDATE login_throttle SET last_failure_at = now() - make_interval(days => $1)"
        " WHERE scope = 'account'",
        settings.accounts_account_counter_days + 1,
    )
    assert aged == "UPDATE 2"
    await Retention(pool, settings).round()


async def _reset(ctx: Context, user_id: uuid.UUID, new_password: str) -> None:
    async with ctx.pool.acquire() as conn:
        token = await links.new_action_token(ctx, conn, user_id, RESET)
    completion = password_reset.ResetCompletion(token=token, new_password=new_password)
    await password_reset.complete_reset(completion, ctx)


@pytest.mark.promise("P-08")
async def test_a_lock_outlasts_the_counters_retention_alike_with_or_without_an_account(
    ctx: Context, pool: asyncpg.Pool, vault: Vault
) -> None:
    await _user(pool, vault, REGISTERED)
    for email in (REGISTERED, UNREGISTERED):
        await _lock(ctx, pool, vault, email)
    locked_now = {email: await _attempt(ctx, email, WRONG) for email in (REGISTERED, UNREGISTERED)}
    assert locked_now[REGISTERED] == locked_now[UNREGISTERED]
    assert locked_now[REGISTERED][1].endswith("/login-locked")

    await _past_the_counters_retention(pool)

    later = {email: await _attempt(ctx, email, WRONG) for email in (REGISTERED, UNREGISTERED)}
    assert later[REGISTERED] == later[UNREGISTERED] == locked_now[REGISTERED]
    # The owner's own password is refused as a guess is: the lock still holds.
    assert await _attempt(ctx, REGISTERED, PASSWORD) == locked_now[REGISTERED]


@pytest.mark.promise("P-08")
async def test_whoever_holds_the_mailbox_lifts_the_lock_by_a_reset_account_or_not(
    ctx: Context, pool: asyncpg.Pool, vault: Vault
) -> None:
    """Kept past its retention, a lock still lifts: the owner resets; the holder of an
    address without an account signs up with it and resets the same way."""
    registered = await _user(pool, vault, REGISTERED)
    for email in (REGISTERED, UNREGISTERED):
        await _lock(ctx, pool, vault, email)
    await _past_the_counters_retention(pool)
    signed_up = await _user(pool, vault, UNREGISTERED, email_verified=False, active=False)

    new_password = "a new password, chosen after the reset link"
    for email, user_id in ((REGISTERED, registered), (UNREGISTERED, signed_up)):
        assert (await _attempt(ctx, email, PASSWORD))[1].endswith("/login-locked")
        await _reset(ctx, user_id, new_password)
        assert (await _attempt(ctx, email, new_password))[0] == 200


MOVED = "the-owners-new-address@example.com"
NEVER = "never-an-account@example.com"


async def _moved_by_its_owner(ctx: Context, vault: Vault, user_id: uuid.UUID) -> None:
    """The owner's confirmed change (the link of the new address followed)."""
    async with ctx.pool.acquire() as conn, conn.transaction():
        await store.update_user(
            conn, user_id, pending_email=await vault.seal(user_id, MOVED, purpose=PENDING_EMAIL),
            pending_email_index=vault.blind_index(MOVED, purpose=EMAIL_INDEX),
        )  # fmt: skip
        user = await store.user_by_id(conn, user_id, lock=True)
        assert user is not None
        assert await auth._take_pending_address(ctx, conn, user)


async def _moved_by_support(ctx: Context, vault: Vault, user_id: uuid.UUID) -> None:
    """Support's change on the owner's emailed request (P-24)."""
    change = operators.UserChange(email=MOVED, request_reference="TCK-9", purpose="asked by email")
    await operators.change_user(user_id, change, ctx, operator_claims(uuid.uuid4(), "support"))


@pytest.mark.promise("P-08")
@pytest.mark.parametrize("move", [_moved_by_its_owner, _moved_by_support])
async def test_a_locked_accounts_new_address_answers_as_one_without_an_account(
    ctx: Context, pool: asyncpg.Pool, vault: Vault, move: Any
) -> None:
    # Carried to the new address, the lock would answer a first wrong password there with
    # 429, where an address nobody has answers 401: it would tell that one has it. The
    # lock stays with the old address, which answers as any locked one does.
    user_id = await _user(pool, vault, REGISTERED)
    await _lock(ctx, pool, vault, REGISTERED)
    await move(ctx, vault, user_id)
    assert await _attempt(ctx, MOVED, WRONG) == await _attempt(ctx, NEVER, WRONG)
    assert (await _attempt(ctx, REGISTERED, WRONG))[1].endswith("/login-locked")
