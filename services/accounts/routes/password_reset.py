"""Password reset by a link mailed to the account's address; it also lifts a login lock.

Asking answers the same whether or not the email is registered, and mails at most one
link per account per interval (:mod:`services.accounts.reset_links`; a sign-up with the
address mails one too). The link's token is single use and short-lived;
completing it sets the new password, ends every session (whoever held one is signed
out) and clears the account's login throttle: proving control of the mailbox is what a
locked account waits for, so support is not the only way back in.
"""

from __future__ import annotations

from uuid import UUID

from fastapi import APIRouter, status
from pydantic import BaseModel, EmailStr, Field

from services.accounts import pending_resets, store
from services.accounts.answer_floor import ANSWER_FLOOR_SECONDS, answer_floor
from services.accounts.context import EMAIL, EMAIL_INDEX, Ctx
from services.accounts.links import link_invalid, link_used
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
    async with answer_floor(ANSWER_FLOOR_SECONDS):  # a known address costs more queries
        index = ctx.vault.blind_index(body.email, purpose=EMAIL_INDEX)
        async with ctx.pool.acquire() as conn:
            held: UUID | None = None
            async with conn.transaction():
                user = await store.user_by_email_index(conn, index)
                # One request at a time (the interval between mails is read under the
                # lock), waiting only within the floor: past it, the reset is recorded
                # and the answer goes; the worker mails it once the row is free (an
                # export holds it for as long as it reads).
                if user is not None:
                    if await store.lock_user_within(conn, user["id"], LOCK_MS):
                        await mail_reset_link(ctx, conn, user["id"])
                    else:
                        held = user["id"]
            if held is not None:
                # Committed before the answer says a link is on its way, in a
                # transaction of its own that waits for no lock (pending_resets.py).
                await pending_resets.record(conn, held)
    return ResetRequested()


@router.post("/password-resets/complete", status_code=status.HTTP_204_NO_CONTENT)
async def complete_reset(body: ResetCompletion, ctx: Ctx) -> None:
    """Set a new password with the mailed token: every session ends, a login lock lifts.
    A link used already answers ``409 link-used``: a retry whose answer was lost learns
    the password was changed. An unknown, expired or revoked one (the reset revokes the
    account's other reset links) answers ``400 link-invalid``."""
    token_hash = secret_hash(body.token)
    async with ctx.pool.acquire() as conn:
        # Checked before the argon2 work, so invalid tokens cost us no hashing.
        if await _token_user(conn, token_hash) is None:
            raise await _not_usable(conn, token_hash)
    new_hash = await hash_password(body.new_password)
    async with ctx.pool.acquire() as conn, conn.transaction():
        user_id = await store.action_token_owner(conn, token_hash, PURPOSE)
        user = await store.user_by_id(conn, user_id) if user_id is not None else None
        if user_id is None or user is None:
            raise link_invalid()
        # None is mailed to such an address (reset_links); nor does one made otherwise
        # hand the account to whoever holds it.
        if await store.address_set_by_operator(conn, user_id):
            raise link_invalid()
        # Locks in the order every path takes them: the throttle rows first (a login
        # takes its account counter, then the user's row while it starts a session),
        # then the user's row, then the user's tokens (a password or address change
        # revokes them under the row's lock). Never each waiting for the other.
        email = await ctx.vault.open(user_id, user["email"], purpose=EMAIL)
        await store.clear_throttle(conn, login_key(ctx.vault, "user", email))
        await store.clear_throttle(conn, reauth_key(ctx.vault, user_id))
        await store.user_by_id(conn, user_id, lock=True)
        if await store.use_action_token(conn, token_hash, PURPOSE) is None:
            # Spent (a parallel submit of it went first) or revoked meanwhile: the
            # counters stay.
            raise await _not_usable(conn, token_hash)
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


async def _not_usable(conn: Connection, token_hash: bytes) -> Problem:
    """Why a reset link cannot be used: used already, or unknown, expired or revoked."""
    if await store.spent_action_token(conn, token_hash, PURPOSE) is not None:
        return link_used(
            "This link was already used: your password was changed. Sign in with the new one."
        )
    return link_invalid()
