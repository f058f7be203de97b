"""A single-use link sent again after it worked (its answer lost on a flaky network, a
second tab) is told it was used, ``409 link-used``, not that it is invalid; unknown,
expired and revoked links stay ``400 link-invalid`` (real PostgreSQL and vault)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

import asyncpg
import pytest

from services.accounts import cancel_window
from services.accounts.context import (
    EMAIL,
    EMAIL_INDEX,
    GUARDIAN_EMAIL,
    NAME,
    PENDING_EMAIL,
    Context,
)
from services.accounts.links import new_action_token
from services.accounts.reset_links import PURPOSE as RESET
from services.accounts.routes import auth, me, password_reset
from shared.events import decode_envelope, parse_event
from shared.events.catalogue.notifier import SendNotice
from shared.events.topics import NOTIFIER_COMMANDS
from shared.observability import Problem, problem_type
from shared.vault import Vault
from tests.integration.accounts.users import stored_user


async def _user(
    pool: asyncpg.Pool, vault: Vault, guardian: str | None = None, **columns: Any
) -> tuple[uuid.UUID, bytes]:
    """A user with a real sealed address and name (and ``guardian``'s address); its id
    and the address's index."""
    uid = uuid.uuid4()
    address = f"{uid}@example.com"
    index = vault.blind_index(address, purpose=EMAIL_INDEX)
    if guardian is not None:
        columns["guardian_email"] = await vault.seal(uid, guardian, purpose=GUARDIAN_EMAIL)
    async with pool.acquire() as conn:
        await stored_user(
            conn, id=uid, email_index=index,
            email=await vault.seal(uid, address, purpose=EMAIL),
            name=await vault.seal(uid, "Someone", purpose=NAME), **columns,
        )  # fmt: skip
    return uid, index


async def _token(ctx: Context, uid: uuid.UUID, purpose: str, **extra: Any) -> str:
    async with ctx.pool.acquire() as conn:
        return await new_action_token(ctx, conn, uid, purpose, **extra)


async def _refused(call: Awaitable[object], status: int, slug: str) -> Problem:
    with pytest.raises(Problem) as raised:
        await call
    assert (raised.value.status, raised.value.type) == (status, problem_type(slug))
    return raised.value


def _verify(ctx: Context, token: str) -> Awaitable[auth.LinkUsed]:
    return auth.verify_email(auth.LinkToken(token=token), ctx)


async def test_a_verification_link_sent_again_is_told_it_was_used(
    ctx: Context, pool: asyncpg.Pool, vault: Vault
) -> None:
    uid, index = await _user(pool, vault, active=False, email_verified=False)
    token = await _token(ctx, uid, "verify_email", email_index=index)
    assert (await _verify(ctx, token)).active is True
    used = await _refused(_verify(ctx, token), 409, "link-used")
    assert used.title == "Link already used"
    assert used.detail == "This link was already used: this email address is confirmed."
    await _refused(_verify(ctx, "x" * 43), 400, "link-invalid")  # unknown
    expired = await _token(ctx, uid, "verify_email", lifetime=timedelta(seconds=-1))
    await _refused(_verify(ctx, expired), 400, "link-invalid")
    # A link of another purpose is not this one's, used or not.
    consent = auth.guardian_consent(auth.LinkToken(token=token), ctx)
    await _refused(consent, 400, "link-invalid")


async def test_a_link_refused_for_an_address_another_account_has_is_not_told_it_worked(
    ctx: Context, pool: asyncpg.Pool, vault: Vault
) -> None:
    """The link is spent on its ``409 email-unavailable``: sent again it must not say the
    address is confirmed (it is another account's), nor anything new."""
    taken = "taken@example.com"
    taken_index = vault.blind_index(taken, purpose=EMAIL_INDEX)
    async with pool.acquire() as conn:
        await stored_user(conn, email_index=taken_index)  # the address's account
    uid = uuid.uuid4()
    await _user_with_pending(pool, vault, uid, taken, taken_index)
    token = await _token(ctx, uid, "verify_email", email_index=taken_index)
    await _refused(_verify(ctx, token), 409, "email-unavailable")
    await _refused(_verify(ctx, token), 400, "link-invalid")


async def _user_with_pending(
    pool: asyncpg.Pool, vault: Vault, uid: uuid.UUID, pending: str, pending_index: bytes
) -> None:
    async with pool.acquire() as conn:
        await stored_user(
            conn, id=uid, email=await vault.seal(uid, f"{uid}@example.com", purpose=EMAIL),
            name=await vault.seal(uid, "Someone", purpose=NAME),
            pending_email=await vault.seal(uid, pending, purpose=PENDING_EMAIL),
            pending_email_index=pending_index, pending_change=uuid.uuid4(),
        )  # fmt: skip


async def test_a_guardian_consent_sent_again_is_told_it_is_recorded(
    ctx: Context, pool: asyncpg.Pool, vault: Vault
) -> None:
    uid, _ = await _user(
        pool, vault, "guardian@example.com", age_band="under_13", active=False,
        email_verified=True,
    )  # fmt: skip
    token = await _token(ctx, uid, "guardian_consent")
    link = auth.LinkToken(token=token)
    assert (await auth.guardian_consent(link, ctx)).active is True
    used = await _refused(auth.guardian_consent(link, ctx), 409, "link-used")
    assert used.detail == "This link was already used: your consent is recorded."


@pytest.mark.promise("P-08")
async def test_a_reset_sent_again_is_told_the_password_was_changed_and_changes_nothing(
    ctx: Context, pool: asyncpg.Pool, vault: Vault
) -> None:
    uid, _ = await _user(pool, vault)
    token, other = await _token(ctx, uid, RESET), await _token(ctx, uid, RESET)

    def complete(token: str, password: str) -> Awaitable[None]:
        body = password_reset.ResetCompletion(token=token, new_password=password)
        return password_reset.complete_reset(body, ctx)

    await complete(token, "the-new-password-1")
    set_hash = await pool.fetchval("SELECT password_hash FROM users WHERE id = $1", uid)
    used = await _refused(complete(token, "another-password-2"), 409, "link-used")
    assert used.detail is not None
    assert "password was changed" in used.detail
    assert await pool.fetchval("SELECT password_hash FROM users WHERE id = $1", uid) == set_hash
    # The reset revoked the account's other links: unknown now, as a forged one.
    await _refused(complete(other, "another-password-2"), 400, "link-invalid")
    await _refused(complete("x" * 43, "another-password-2"), 400, "link-invalid")


async def _cancel_link(pool: asyncpg.Pool, request_id: uuid.UUID) -> str:
    rows = await pool.fetch(
        "SELECT value FROM bus_outbox WHERE topic = $1 ORDER BY seq", NOTIFIER_COMMANDS.name
    )
    events = [parse_event(decode_envelope(r["value"])) for r in rows]
    [token] = [
        e.params["token"]
        for e in events
        if isinstance(e, SendNotice)
        and e.params.get("request_id") == str(request_id)
        and "token" in e.params
    ]
    return token


async def _request_deletion(ctx: Context, uid: uuid.UUID) -> tuple[uuid.UUID, str]:
    request_id = uuid.uuid4()
    async with ctx.pool.acquire() as conn, conn.transaction():
        await conn.execute(
            "INSERT INTO deletion_requests (id, user_id, initiated_by, status)"
            " VALUES ($1, $2, 'user', 'requested')",
            request_id,
            uid,
        )
        await cancel_window.notify_deletion_requested(ctx, conn, uid, request_id)
    return request_id, await _cancel_link(ctx.pool, request_id)


@pytest.mark.promise("P-15")
async def test_a_cancel_link_sent_again_is_told_the_deletion_is_cancelled(
    ctx: Context, pool: asyncpg.Pool, vault: Vault
) -> None:
    uid, _ = await _user(pool, vault)

    def cancel(token: str) -> Awaitable[me.DeletionRequest]:
        return me.cancel_deletion_by_link(me.CancelLink(token=token), ctx)

    first, first_link = await _request_deletion(ctx, uid)
    assert (await cancel(first_link)).status == "cancelled"
    used = await _refused(cancel(first_link), 409, "link-used")
    assert used.detail is not None
    assert "deletion is cancelled" in used.detail
    # A later request under way: the old link is dead, and must not say "cancelled".
    second, second_link = await _request_deletion(ctx, uid)
    await _refused(cancel(first_link), 400, "link-invalid")
    # Cancelled signed in: its link, opened from the email, is told it is cancelled.
    async with pool.acquire() as conn, conn.transaction():
        assert await cancel_window.cancel(conn, second, uid) is not None
    await _refused(cancel(second_link), 409, "link-used")
    statuses = await pool.fetch("SELECT id, status FROM deletion_requests ORDER BY created_at")
    assert [(r["id"], r["status"]) for r in statuses] == [
        (first, "cancelled"),
        (second, "cancelled"),
    ]
    await _refused(cancel("x" * 43), 400, "link-invalid")
