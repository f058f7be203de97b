"""Password reset by a link mailed to the account's address; it also lifts a login lock.

Asking answers the same whether or not the email is registered, and mails at most one
link per account per interval (:mod:`services.accounts.reset_links`; a sign-up with the
address mails one too). The link's token is single use and short-lived;
completing it sets the new password, ends every session (whoever held one is signed
out) and clears the account's login throttle: proving control of the mailbox is what a
locked account waits for, so support is not the only way back in.
"""

from __future__ import annotations

import asyncio
import logging
from uuid import UUID

from fastapi import APIRouter, status
from pydantic import BaseModel, EmailStr, Field

from services.accounts import store
from services.accounts.answer_floor import ANSWER_FLOOR_SECONDS, answer_floor
from services.accounts.context import (
    EMAIL,
    EMAIL_INDEX,
    Context,
    Ctx,
)
from services.accounts.reset_links import PURPOSE, mail_reset_link
from services.accounts.routes.auth import (
    LinkToken,
    Password,
    confirm_account_facts,
    replace_password,
)
from services.accounts.security import hash_password, secret_hash
from services.accounts.throttling import login_key, reauth_key
from shared.db.pool import Connection
from shared.observability import Problem

log = logging.getLogger(__name__)
router = APIRouter(tags=["authentication"])
# The longest wait for a user's row held by another request: half the answer floor, so
# the rest of the work still fits under it.
LOCK_MS = int(ANSWER_FLOOR_SECONDS * 1000 / 2)


class ResetRequest(BaseModel):
    email: EmailStr


class ResetRequested(BaseModel):
    status: str = Field(
        "reset_link_sent_if_registered",
        description="The same answer whether or not the email is registered.",
    )


class ResetCompletion(LinkToken):
    new_password: Password


@router.post(
    "/password-resets", status_code=status.HTTP_202_ACCEPTED, response_model=ResetRequested
)
async def request_reset(body: ResetRequest, ctx: Ctx) -> ResetRequested:
    """Mail a password-reset link to the address, if it is an account's (never said)."""
    later: UUID | None = None
    async with answer_floor(ANSWER_FLOOR_SECONDS):  # a known address costs more queries
        index = ctx.vault.blind_index(body.email, purpose=EMAIL_INDEX)
        async with ctx.pool.acquire() as conn, conn.transaction():
            user = await store.user_by_email_index(conn, index)
            # One request at a time (the interval between mails is read under the lock),
            # waiting only within the floor: past it, the answer goes, and the mail once
            # the row is free (an export holds it for as long as it reads).
            if user is not None:
                if await store.lock_user_within(conn, user["id"], LOCK_MS):
                    await mail_reset_link(ctx, conn, user["id"])
                else:
                    later = user["id"]
    if later is not None:
        task = asyncio.get_running_loop().create_task(_mail_when_free(ctx, later))
        _MAILING.add(task)
        task.add_done_callback(_MAILING.discard)
    return ResetRequested()


# Mails waiting for their user's row after their answer went (a reference each, else the
# task may be collected mid-way).
_MAILING: set[asyncio.Task[None]] = set()
LATE_LOCK_TIMEOUT = "60s"


async def _mail_when_free(ctx: Context, user_id: UUID) -> None:
    """The link a request could not mail within its answer floor, once the row is free.
    Lost if the process stops meanwhile: the user, seeing no mail, asks again."""
    try:
        async with ctx.pool.acquire() as conn, conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{LATE_LOCK_TIMEOUT}'")
            if await store.user_by_id(conn, user_id, lock=True) is not None:
                await mail_reset_link(ctx, conn, user_id)
    except Exception as exc:  # a task's error would otherwise go unseen
        log.error("password reset of user %s not mailed: %s", user_id, type(exc).__name__)


@router.post("/password-resets/complete", status_code=status.HTTP_204_NO_CONTENT)
async def complete_reset(body: ResetCompletion, ctx: Ctx) -> None:
    """Set a new password with the mailed token: every session ends, a login lock lifts."""
    token_hash = secret_hash(body.token)
    async with ctx.pool.acquire() as conn:
        # Checked before the argon2 work, so invalid tokens cost us no hashing.
        if await _token_user(conn, token_hash) is None:
            raise _link_invalid()
    new_hash = await hash_password(body.new_password)
    async with ctx.pool.acquire() as conn, conn.transaction():
        user_id = await store.action_token_owner(conn, token_hash, PURPOSE)
        user = await store.user_by_id(conn, user_id) if user_id is not None else None
        if user_id is None or user is None:
            raise _link_invalid()
        # Locks in the order every path takes them: the throttle rows first (a login
        # takes its account counter, then the user's row while it starts a session),
        # then the user's row, then the user's tokens (a password or address change
        # revokes them under the row's lock). Never each waiting for the other.
        email = await ctx.vault.open(user_id, user["email"], purpose=EMAIL)
        await store.clear_throttle(conn, login_key(ctx.vault, "user", email))
        await store.clear_throttle(conn, reauth_key(ctx.vault, user_id))
        await store.user_by_id(conn, user_id, lock=True)
        if await store.use_action_token(conn, token_hash, PURPOSE) is None:
            raise _link_invalid()  # spent or revoked meanwhile: the counters stay
        await replace_password(conn, ctx.vault, user_id, new_hash, "password-reset")
        if not user["email_verified"]:
            # The link came to the account's address: its holder proved the mailbox. An
            # address someone signed up with and never verified is its owner's again.
            fresh = await store.user_by_id(conn, user_id)
            assert fresh is not None
            await confirm_account_facts(ctx, conn, fresh, {"email_verified": True})
        await conn.execute(
            "UPDATE action_tokens SET used_at = now()"
            " WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL",
            user_id,
            PURPOSE,
        )


async def _token_user(conn: Connection, token_hash: bytes) -> UUID | None:
    value: UUID | None = await conn.fetchval(
        "SELECT user_id FROM action_tokens WHERE token_hash = $1 AND purpose = $2"
        " AND used_at IS NULL AND expires_at > now()",
        token_hash,
        PURPOSE,
    )
    return value


def _link_invalid() -> Problem:
    return Problem(
        400, "Link invalid", "This link is invalid, expired or already used.", slug="link-invalid"
    )
