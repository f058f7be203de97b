"""Operator identities on a scratch accounts database (P-07, P-15): a disabled
operator is refused everywhere a password or a session is checked; admins disable
operators and change their roles, each ending the operator's sessions and audited,
never leaving no admin; a deletion needs operators who set their own passwords."""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from services.accounts import store
from services.accounts.context import Context
from services.accounts.routes import operators
from shared.config import PlatformSettings
from shared.observability import Problem, problem_type
from shared.vault import Vault
from tests.integration.accounts.users import (
    accounts_context,
    operator_claims,
    stored_deletion_request,
    stored_operator,
    stored_user,
)


async def _open_session(pool: asyncpg.Pool, operator_id: uuid.UUID) -> uuid.UUID:
    session_id = uuid.uuid4()
    await pool.execute(
        "INSERT INTO sessions (id, principal_id, kind) VALUES ($1, $2, 'operator')",
        session_id,
        operator_id,
    )
    return session_id


async def _revoked(pool: asyncpg.Pool, session_id: uuid.UUID) -> bool:
    revoked = await pool.fetchval("SELECT revoked_at FROM sessions WHERE id = $1", session_id)
    return revoked is not None


async def _audited(pool: asyncpg.Pool, subject: uuid.UUID) -> list[tuple[object, ...]]:
    rows = await pool.fetch(
        "SELECT operator_id, action, fields, purpose FROM audit_log WHERE subject_id = $1"
        " ORDER BY id",
        subject,
    )
    return [(r["operator_id"], r["action"], list(r["fields"]), r["purpose"]) for r in rows]


@pytest.mark.promise("P-07")
async def test_a_disabled_operator_has_no_session_and_no_password_that_passes(
    pool: asyncpg.Pool, vault: Vault, settings: PlatformSettings
) -> None:
    async with pool.acquire() as conn:
        officer = await stored_operator(conn, "officer-password")
    session_id = await _open_session(pool, officer)
    ctx = accounts_context(settings, pool, vault)
    claims = operator_claims(officer)
    await operators._reauthenticate(ctx, claims, "officer-password")  # active: passes
    async with pool.acquire() as conn:
        session = await store.operator_session(conn, session_id, officer)
    assert session is not None
    assert (session["kind"], session["id"], session["disabled_at"]) == ("operator", officer, None)
    # Disabled by hand (as before there was a route): refused all the same.
    await pool.execute("UPDATE operators SET disabled_at = now() WHERE id = $1", officer)
    with pytest.raises(Problem) as refused:
        await operators._reauthenticate(ctx, claims, "officer-password")
    assert (refused.value.status, refused.value.type) == (
        403,
        problem_type("reauthentication-failed"),
    )
    async with pool.acquire() as conn:
        session = await store.operator_session(conn, session_id, officer)
    assert session is not None
    assert session["disabled_at"] is not None  # the session check refuses it (401)


@pytest.mark.promise("P-07")
async def test_admins_disable_and_change_roles_ending_sessions_and_never_the_last_admin(
    pool: asyncpg.Pool, vault: Vault, settings: PlatformSettings
) -> None:
    async with pool.acquire() as conn:
        first = await stored_operator(conn, "first-password", "admin")
        support = await stored_operator(conn, "support-password", "support", created_by=first)
    ctx = accounts_context(settings, pool, vault)
    as_first = operator_claims(first, "admin")
    reason = "moved to another team, ticket OPS-12"

    # The only admin keeps the role.
    demote = operators.OperatorRolesIn(roles=["support"], reason=reason)
    with pytest.raises(Problem) as refused:
        await operators.change_operator_roles(first, demote, ctx, as_first)
    assert (refused.value.status, refused.value.type) == (409, problem_type("last-admin"))

    # A role change ends the operator's sessions (their tokens carry the old roles).
    session = await _open_session(pool, support)
    promote = operators.OperatorRolesIn(roles=["admin", "support"], reason=reason)
    changed = await operators.change_operator_roles(support, promote, ctx, as_first)
    assert (changed.roles, changed.disabled_at) == (["admin", "support"], None)
    assert await _revoked(pool, session)
    assert await _audited(pool, support) == [(first, "change", ["roles"], reason)]
    # The same roles again change nothing: no row, no session ended.
    later = await _open_session(pool, support)
    await operators.change_operator_roles(support, promote, ctx, as_first)
    assert not await _revoked(pool, later)
    assert len(await _audited(pool, support)) == 1

    # With a second admin, the first may step down...
    assert (await operators.change_operator_roles(first, demote, ctx, as_first)).roles == [
        "support"
    ]
    # ... and is no longer one, whatever their token says.
    with pytest.raises(Problem) as refused:
        await operators.disable_operator(support, operators.UnlockIn(reason=reason), ctx, as_first)
    assert refused.value.status == 403

    # The remaining admin disables the first: sessions end, audited; not twice.
    as_support = operator_claims(support, "admin")
    session = await _open_session(pool, first)
    disabled = await operators.disable_operator(
        first, operators.UnlockIn(reason=reason), ctx, as_support
    )
    assert disabled.disabled_at is not None
    assert await _revoked(pool, session)
    assert (await _audited(pool, first))[-1] == (support, "change", ["disabled_at"], reason)
    with pytest.raises(Problem) as refused:
        await operators.disable_operator(first, operators.UnlockIn(reason=reason), ctx, as_support)
    assert (refused.value.status, refused.value.type) == (409, problem_type("operator-disabled"))
    # Not their own identity; not the last admin's role.
    with pytest.raises(Problem) as refused:
        await operators.disable_operator(
            support, operators.UnlockIn(reason=reason), ctx, as_support
        )
    assert (refused.value.status, refused.value.type) == (403, problem_type("own-identity"))
    with pytest.raises(Problem) as refused:
        await operators.change_operator_roles(support, demote, ctx, as_support)
    assert (refused.value.status, refused.value.type) == (409, problem_type("last-admin"))
    with pytest.raises(Problem) as refused:
        await operators.change_operator_roles(uuid.uuid4(), demote, ctx, as_support)
    assert refused.value.status == 404


@pytest.mark.promise("P-15")
async def test_no_deletion_is_requested_or_approved_under_a_password_a_creator_chose(
    pool: asyncpg.Pool, vault: Vault, settings: PlatformSettings
) -> None:
    async with pool.acquire() as conn:
        admin = await stored_operator(conn, "admin-password", "admin")
        made = await stored_operator(
            conn, "chosen-by-admin", "support", created_by=admin, own_password=False
        )
        officer = await stored_operator(conn, "officer-password")
        user_id = await stored_user(conn)
        # One requested under the creator's password (before operators set their own).
        waiting = await stored_deletion_request(conn, user_id, "pending_approval", made)
    ctx = accounts_context(settings, pool, vault)
    body = operators.OperatorDeletionIn(password="chosen-by-admin", reason="asked by phone")
    with pytest.raises(Problem) as refused:
        await operators.request_user_deletion(user_id, body, ctx, operator_claims(made, "support"))
    assert (refused.value.status, refused.value.type) == (
        403,
        problem_type("password-change-required"),
    )
    approval = operators.OperatorReauthentication(password="officer-password")
    with pytest.raises(Problem) as refused:
        await operators.approve_user_deletion(waiting, approval, ctx, operator_claims(officer))
    assert (refused.value.status, refused.value.type) == (403, problem_type("four-eyes"))
    status = "SELECT status FROM deletion_requests WHERE id = $1"
    assert await pool.fetchval(status, waiting) == "pending_approval"


async def _request_deletion(
    ctx: Context, user_id: uuid.UUID, requester: uuid.UUID, password: str
) -> uuid.UUID:
    body = operators.OperatorDeletionIn(password=password, reason="asked by phone")
    asked = await operators.request_user_deletion(
        user_id, body, ctx, operator_claims(requester, "support")
    )
    return asked.id


async def _approve(ctx: Context, request_id: uuid.UUID, approver: uuid.UUID, password: str) -> str:
    body = operators.OperatorReauthentication(password=password)
    approved = await operators.approve_user_deletion(
        request_id, body, ctx, operator_claims(approver)
    )
    return approved.status


@pytest.mark.promise("P-07")
@pytest.mark.promise("P-15")
async def test_the_audit_chain_names_who_requested_an_operator_deletion_and_who_approved_it(
    pool: asyncpg.Pool, vault: Vault, settings: PlatformSettings
) -> None:
    """Kept for good in the chain: deletion_requests.requested_by is outside it (its
    owner may edit it) and goes with the disclosure log's release."""
    async with pool.acquire() as conn:
        support = await stored_operator(conn, "support-password", "support")
        officer = await stored_operator(conn, "officer-password")
        user_id = await stored_user(conn)
    ctx = accounts_context(settings, pool, vault)
    request_id = await _request_deletion(ctx, user_id, support, "support-password")
    assert await _audited(pool, user_id) == [
        (support, "change", ["deletion_request"], f"operator deletion, request {request_id}"
         " requested"),
    ]  # fmt: skip
    assert await _approve(ctx, request_id, officer, "officer-password") == "requested"
    assert (await _audited(pool, user_id))[1:] == [
        (officer, "delete", ["account"], f"operator deletion, request {request_id}, requested"
         f" by operator {support}"),
    ]  # fmt: skip


@pytest.mark.promise("P-15")
async def test_a_deletion_is_not_approved_once_its_requester_lost_the_role_to_request_one(
    pool: asyncpg.Pool, vault: Vault, settings: PlatformSettings
) -> None:
    async with pool.acquire() as conn:
        admin = await stored_operator(conn, "admin-password", "admin")
        support = await stored_operator(conn, "support-password", "support", created_by=admin)
        officer = await stored_operator(conn, "officer-password")
        user_id = await stored_user(conn)
    ctx = accounts_context(settings, pool, vault)
    request_id = await _request_deletion(ctx, user_id, support, "support-password")
    as_admin = operator_claims(admin, "admin")
    reason = "moved to analytics, ticket OPS-14"
    moved = operators.OperatorRolesIn(roles=["analyst"], reason=reason)
    await operators.change_operator_roles(support, moved, ctx, as_admin)

    with pytest.raises(Problem) as refused:
        await _approve(ctx, request_id, officer, "officer-password")
    assert (refused.value.status, refused.value.type) == (
        409,
        problem_type("requester-not-entitled"),
    )
    status = "SELECT status FROM deletion_requests WHERE id = $1"
    assert await pool.fetchval(status, request_id) == "pending_approval"
    assert [row[1] for row in await _audited(pool, user_id)] == ["change"]  # no delete
    # It is the role held now that counts: given back, the request may be approved.
    back = operators.OperatorRolesIn(roles=["support"], reason=reason)
    await operators.change_operator_roles(support, back, ctx, as_admin)
    assert await _approve(ctx, request_id, officer, "officer-password") == "requested"
