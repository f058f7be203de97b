"""Users and operators written straight into a scratch accounts database, and the
context routes run with on it."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import asyncpg
from prometheus_client import CollectorRegistry

from services.accounts import store
from services.accounts.config import AccountsSettings
from services.accounts.context import EMAIL, EMAIL_INDEX, NAME, Context
from services.accounts.security import hash_password
from shared.auth import Claims, OperatorRole
from shared.config import PlatformSettings
from shared.db.pool import Connection
from shared.observability import Metrics
from shared.service import Runtime
from shared.vault import Vault


async def stored_user(conn: Connection, **columns: Any) -> uuid.UUID:
    """An active adult with placeholder sealed fields; ``columns`` replace or add any."""
    user_id = columns.pop("id", None) or uuid.uuid4()
    defaults: dict[str, Any] = {
        "email_index": user_id.bytes,
        "email": b"sealed-email",
        "name": b"sealed-name",
        "password_hash": "$argon2id$not-a-real-hash",
        "age_band": "adult",
        "active": True,
    }
    await store.insert_user(conn, id=user_id, **{**defaults, **columns})
    return user_id


async def sealed_user(
    pool: asyncpg.Pool, vault: Vault, email: str, password: str, **columns: Any
) -> uuid.UUID:
    """A verified account at ``email`` with this password, its fields sealed as the
    service seals them; ``columns`` replace or add any."""
    user_id = uuid.uuid4()
    async with pool.acquire() as conn:
        return await stored_user(
            conn, id=user_id, email=await vault.seal(user_id, email, purpose=EMAIL),
            name=await vault.seal(user_id, "Owner", purpose=NAME),
            email_index=vault.blind_index(email, purpose=EMAIL_INDEX),
            password_hash=await hash_password(password), **{"email_verified": True, **columns},
        )  # fmt: skip


async def stored_operator(
    conn: Connection,
    password: str,
    *roles: str,
    created_by: uuid.UUID | None = None,
    own_password: bool = True,
) -> uuid.UUID:
    """An operator identity whose password is ``password`` (a real argon2id hash), set
    by the operator themselves unless not ``own_password`` (their creator's choice)."""
    operator_id = uuid.uuid4()
    created = await store.insert_operator(
        conn, operator_id, operator_id.bytes, b"sealed-email", await hash_password(password),
        list(roles or ("privacy_officer",)), created_by, own_password=own_password,
    )  # fmt: skip
    assert created
    return operator_id


async def stored_deletion_request(
    conn: Connection, user_id: uuid.UUID, status: str, requested_by: uuid.UUID | None
) -> uuid.UUID:
    """A deletion request in ``status``, the user's own or (``requested_by``) an
    operator's with its reason, last changed three days ago."""
    request_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO deletion_requests (id, user_id, initiated_by, requested_by, reason,"
        " status, updated_at) VALUES ($1, $2, $3, $4, $5, $6, now() - interval '3 days')",
        request_id,
        user_id,
        "user" if requested_by is None else "operator",
        requested_by,
        None if requested_by is None else "the user asked by phone",
        status,
    )
    return request_id


def operator_claims(operator_id: uuid.UUID, *roles: OperatorRole) -> Claims:
    now = int(datetime.now(UTC).timestamp())
    return Claims(
        sub=str(operator_id), sid=str(uuid.uuid4()), kind="operator",
        roles=roles or ("privacy_officer",), iat=now, exp=now + 300,
    )  # fmt: skip


def accounts_context(settings: PlatformSettings, pool: asyncpg.Pool, vault: Vault) -> Context:
    """What the routes get from ``app.state``, on the scratch database and vault."""
    metrics = Metrics("accounts-test", CollectorRegistry())
    runtime = Runtime(settings, "accounts", pool, metrics, vault=vault)
    return Context(settings=AccountsSettings(environment="test"), runtime=runtime)
