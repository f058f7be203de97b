"""The accounts service's SQL (its own database only).

Personal columns are bytea sealed by the caller with the subject's vault key; this
module never sees plaintext personal data except what callers pass through sealed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg

from services.accounts.context import SOURCE
from shared.bus import add_event, add_events
from shared.bus.outbox import insert_sql
from shared.db.pool import Connection
from shared.events.catalogue.accounts import AuditLogAppended, SessionEndReason, SessionsRevoked

#: Kafka key of every audit checkpoint: one key, so the chain stays in order.
AUDIT_CHAIN_KEY = "audit-log"

Row = asyncpg.Record
# A user's row as read, or as it will be once a change commits.
UserRow = asyncpg.Record | Mapping[str, Any]

# -- users -----------------------------------------------------------------------------


async def insert_user(conn: Connection, **columns: Any) -> bool:
    """Insert a user; False when the email (blind index) is already registered."""
    names = list(columns)
    placeholders = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    status = await conn.execute(
        f"INSERT INTO users ({', '.join(names)}) VALUES ({placeholders})"  # noqa: S608 - names are ours
        " ON CONFLICT (email_index) DO NOTHING",
        *columns.values(),
    )
    return status == "INSERT 0 1"


async def user_by_id(conn: Connection, user_id: UUID, *, lock: bool = False) -> Row | None:
    suffix = " FOR UPDATE" if lock else ""
    return await conn.fetchrow(f"SELECT * FROM users WHERE id = $1{suffix}", user_id)  # noqa: S608


async def user_by_email_index(conn: Connection, index: bytes) -> Row | None:
    return await conn.fetchrow("SELECT * FROM users WHERE email_index = $1", index)


# updated_at versions the contact card (its changed_at): always later than the last one,
# whichever clock set that (an edit on the row as read sets it from the API's clock).
_NEXT_VERSION = "greatest(now(), updated_at + interval '1 microsecond')"


async def update_user(conn: Connection, user_id: UUID, **columns: Any) -> None:
    if not columns:
        return
    sets = ", ".join(f"{name} = ${i}" for i, name in enumerate(columns, start=2))
    await conn.execute(
        f"UPDATE users SET {sets}, updated_at = {_NEXT_VERSION} WHERE id = $1",  # noqa: S608 - names are ours
        user_id,
        *columns.values(),
    )


async def update_user_returning(conn: Connection, user_id: UUID, **columns: Any) -> Row | None:
    """Update a user and return the row as changed (locked till the transaction ends),
    in one round trip; None when there is no such user."""
    sets = "".join(f"{name} = ${i}, " for i, name in enumerate(columns, start=2))
    return await conn.fetchrow(
        f"UPDATE users SET {sets}updated_at = {_NEXT_VERSION} WHERE id = $1 RETURNING *",  # noqa: S608 - names are ours
        user_id,
        *columns.values(),
    )


# What a contact card is made of: an edit may skip re-reading the row only while every
# one of these is still what the caller read.
CARD_COLUMNS = (
    "name", "email", "guardian_email", "pending_email", "pending_change", "locale", "age_band",
    "marketing_email", "tracking_opt_out", "active", "updated_at",
)  # fmt: skip
_EDIT_AS_READ = f"""
WITH changed AS (
    UPDATE users SET name = $2, locale = $3, updated_at = $4
    WHERE id = $1 AND ({", ".join(CARD_COLUMNS)})
          IS NOT DISTINCT FROM ({", ".join(f"${i}" for i in range(5, 5 + len(CARD_COLUMNS)))})
    RETURNING 1
), queued AS ({insert_sql(5 + len(CARD_COLUMNS), "EXISTS (SELECT FROM changed)")})
SELECT count(*) FROM changed
"""  # noqa: S608 - column names and numbers are ours


async def edit_as_read(
    conn: Connection,
    seen: Row,
    name: bytes,
    locale: str,
    updated_at: datetime,
    outbox: Sequence[Sequence[object]],
) -> bool:
    """Set name and locale and queue ``outbox`` (:func:`shared.bus.outbox_arrays`) in one
    statement, only if the user's card columns are still as in ``seen``; False if they
    changed meanwhile (the caller then takes the locking path)."""
    changed = await conn.fetchval(
        _EDIT_AS_READ,
        seen["id"],
        name,
        locale,
        updated_at,
        *(seen[c] for c in CARD_COLUMNS),
        *outbox,
    )
    return bool(changed)


_EXPIRE_PENDING = f"""
UPDATE users SET pending_email = NULL, pending_email_index = NULL,
                 pending_email_until = NULL, pending_change = NULL,
                 updated_at = {_NEXT_VERSION}
WHERE id IN (
    SELECT id FROM users WHERE pending_email_until < now()
    ORDER BY pending_email_until LIMIT $1 FOR UPDATE SKIP LOCKED
)
RETURNING *
"""  # noqa: S608 - constant


async def expire_pending_addresses(conn: Connection, limit: int) -> list[Row]:
    """Clear new addresses whose confirmation link has expired; the users as changed."""
    return list(await conn.fetch(_EXPIRE_PENDING, limit))


async def email_index_taken(conn: Connection, index: bytes, other_than: UUID) -> bool:
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM users WHERE email_index = $1 AND id <> $2)",
            index,
            other_than,
        )
    )


# -- one-time links --------------------------------------------------------------------


async def add_action_token(
    conn: Connection,
    token_hash: bytes,
    user_id: UUID,
    purpose: str,
    expires_at: datetime,
    email_index: bytes | None = None,
    deletion_request_id: UUID | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO action_tokens (token_hash, user_id, purpose, expires_at, email_index,"
        " deletion_request_id) VALUES ($1, $2, $3, $4, $5, $6)",
        token_hash,
        user_id,
        purpose,
        expires_at,
        email_index,
        deletion_request_id,
    )


NO_PENDING_ADDRESS = {
    "pending_email": None,
    "pending_email_index": None,
    "pending_email_until": None,
    "pending_change": None,
}


async def revoke_address_links(conn: Connection, user_id: UUID, own_index: bytes) -> None:
    """Revoke the unused links confirming any address but the account's own
    (``own_index``): call whenever the pending address is set, withdrawn, replaced or
    confirmed, so only the link of the latest change can ever confirm it. A link to the
    account's own address is kept: it can only verify that address, from its mailbox."""
    await conn.execute(
        "DELETE FROM action_tokens WHERE user_id = $1 AND purpose = 'verify_email'"
        " AND used_at IS NULL AND email_index IS NOT NULL AND email_index <> $2",
        user_id,
        own_index,
    )


async def set_aside_device(conn: Connection, user_id: UUID, device_id: UUID) -> bool:
    """Move the user's device out of ``devices`` into ``erasing_items``; False if none."""
    status = await conn.execute(
        "WITH gone AS (DELETE FROM devices WHERE id = $1 AND user_id = $2 RETURNING *)"
        " INSERT INTO erasing_items (item_id, user_id, scope, rows)"
        " SELECT id, user_id, 'device', to_jsonb(gone) FROM gone",
        device_id,
        user_id,
    )
    return status == "INSERT 0 1"


async def set_aside_request(conn: Connection, user_id: UUID, request_id: UUID) -> bool:
    """Move the user's request and its thread into ``erasing_items``; False if none.
    (One statement, one snapshot: the thread is read before the cascade removes it.)"""
    status = await conn.execute(
        "WITH gone AS (DELETE FROM requests WHERE id = $1 AND user_id = $2 RETURNING *),"
        " thread AS (SELECT coalesce(jsonb_agg(to_jsonb(m) ORDER BY m.created_at),"
        " '[]'::jsonb) AS messages FROM request_messages m WHERE m.request_id = $1)"
        " INSERT INTO erasing_items (item_id, user_id, scope, rows)"
        " SELECT g.id, g.user_id, 'request',"
        " jsonb_build_object('request', to_jsonb(g), 'messages', t.messages)"
        " FROM gone g, thread t",
        request_id,
        user_id,
    )
    return status == "INSERT 0 1"


async def revoke_password_resets(conn: Connection, user_id: UUID) -> None:
    """Revoke unused reset links: call when the account's address changes, since they
    went to the address it no longer has (whoever holds that mailbox now)."""
    await conn.execute(
        "DELETE FROM action_tokens WHERE user_id = $1 AND purpose = 'password_reset'"
        " AND used_at IS NULL",
        user_id,
    )


LOCK_LEFT_BEHIND = {"login_locked": False}
"""Columns of an account whose address changes: the lock stays with the address it was
set at (its counter, kept until a reset: retention.py). Carried to the new one, a first
wrong password there would answer 429 where any address without an account answers 401,
and tell that an account has it."""


async def record_operator_address(conn: Connection, user_id: UUID, email_index: bytes) -> None:
    """The account's address is now one an operator gave it (migration 024)."""
    await conn.execute(
        "INSERT INTO operator_set_addresses (user_id, email_index) VALUES ($1, $2)"
        " ON CONFLICT (user_id) DO UPDATE SET email_index = $2, set_at = now()",
        user_id,
        email_index,
    )


async def address_set_by_operator(conn: Connection, user_id: UUID) -> bool:
    """Whether the account's address is still the one an operator gave it, its owner
    never having signed in under it: no password-reset link may go to it."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM operator_set_addresses a JOIN users u"
            " ON u.id = a.user_id AND u.email_index = a.email_index WHERE a.user_id = $1)",
            user_id,
        )
    )


async def owner_signed_in(conn: Connection, user_id: UUID) -> None:
    """The owner signed in with their password: the address they did it under is theirs."""
    await conn.execute("DELETE FROM operator_set_addresses WHERE user_id = $1", user_id)


async def action_token_owner(conn: Connection, token_hash: bytes, purpose: str) -> UUID | None:
    """Whose token this is (spent or not): to lock the user before spending it."""
    owner: UUID | None = await conn.fetchval(
        "SELECT user_id FROM action_tokens WHERE token_hash = $1 AND purpose = $2",
        token_hash,
        purpose,
    )
    return owner


async def use_action_token(conn: Connection, token_hash: bytes, purpose: str) -> Row | None:
    """Spend a valid, unused, unexpired token once: its user_id, and the email_index of
    the address it was mailed to confirm (a verification link)."""
    return await conn.fetchrow(
        "UPDATE action_tokens SET used_at = now() WHERE token_hash = $1 AND purpose = $2"
        " AND used_at IS NULL AND expires_at > now() RETURNING user_id, email_index",
        token_hash,
        purpose,
    )


async def spent_action_token(conn: Connection, token_hash: bytes, purpose: str) -> Row | None:
    """The token, if it exists and was used (expired since or not): a link opened
    already, or a deletion's cancel link spent by a cancel or a later request. Its
    user_id, email_index and deletion_request_id."""
    return await conn.fetchrow(
        "SELECT user_id, email_index, deletion_request_id FROM action_tokens"
        " WHERE token_hash = $1 AND purpose = $2 AND used_at IS NOT NULL",
        token_hash,
        purpose,
    )


# -- sessions --------------------------------------------------------------------------


async def open_session_with_refresh(
    conn: Connection,
    session_id: UUID,
    principal_id: UUID,
    kind: str,
    token_hash: bytes,
    expires_at: datetime,
) -> None:
    """A new session and its first refresh token, in one round trip."""
    await conn.execute(
        "WITH s AS (INSERT INTO sessions (id, principal_id, kind) VALUES ($1, $2, $3))"
        " INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($4, $1, $5)",
        session_id,
        principal_id,
        kind,
        token_hash,
        expires_at,
    )


async def operator_session(conn: Connection, session_id: UUID, operator_id: UUID) -> Row | None:
    """The session if open (None if not), with its ``kind`` and its principal's
    operator columns ``id``, ``roles``, ``password_set_at`` and ``disabled_at`` (all NULL
    when the principal is no operator: a user's session)."""
    return await conn.fetchrow(
        "SELECT s.kind, o.id, o.roles, o.password_set_at, o.disabled_at FROM sessions s"
        " LEFT JOIN operators o ON o.id = s.principal_id"
        " WHERE s.id = $1 AND s.principal_id = $2 AND s.revoked_at IS NULL",
        session_id,
        operator_id,
    )


# What a profile shows (no password hash, no email index): what every request reads.
PROFILE_COLUMNS = (
    "id", "name", "email", "email_verified", "pending_email", "pending_email_until",
    "pending_change",
    "age_band", "birth_date",
    "guardian_email", "active", "locale", "marketing_email", "personalisation",
    "tracking_opt_out", "created_at", "updated_at",
)  # fmt: skip
_SESSION_USER = (
    f"SELECT {', '.join(f'u.{c}' for c in PROFILE_COLUMNS)} FROM sessions s"  # noqa: S608 - ours
    " LEFT JOIN users u ON u.id = s.principal_id"
    " WHERE s.id = $1 AND s.principal_id = $2 AND s.revoked_at IS NULL"
)


async def user_session(conn: Connection, session_id: UUID, user_id: UUID) -> Row | None:
    """The session check and the user's profile columns in one round trip: None when the
    session is not open; a row whose ``id`` is NULL when it is open but the user is gone."""
    return await conn.fetchrow(_SESSION_USER, session_id, user_id)


# Every revocation is also published, in the caller's transaction: the other APIs check
# tokens against the sessions topic, not this database (shared.auth.revocations).


async def revoke_session(conn: Connection, session_id: UUID, reason: SessionEndReason) -> None:
    principal_id = await conn.fetchval(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = $2"
        " WHERE id = $1 AND revoked_at IS NULL RETURNING principal_id",
        session_id,
        reason,
    )
    if principal_id is not None:
        ended = SessionsRevoked(
            principal_id=principal_id,
            session_ids=(session_id,),
            revoked_at=datetime.now(UTC),
            reason=reason,
        )
        await add_event(conn, ended, source=SOURCE, subject=str(principal_id))


async def revoke_sessions_of(conn: Connection, principal_id: UUID, reason: SessionEndReason) -> int:
    """End every open session of the principal; the number ended."""
    rows = await conn.fetch(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = $2"
        " WHERE principal_id = $1 AND revoked_at IS NULL RETURNING id",
        principal_id,
        reason,
    )
    # No open session, no live token: nothing to tell.
    if rows:
        # The process clock, which also stamps the tokens' iat; a token of this second
        # but of a session opened after the update is the new one, and stays valid.
        now = datetime.now(UTC)
        ended = SessionsRevoked(
            principal_id=principal_id,
            session_ids=tuple(r["id"] for r in rows),
            issued_before=now,
            revoked_at=now,
            reason=reason,
        )
        await add_event(conn, ended, source=SOURCE, subject=str(principal_id))
    return len(rows)


async def add_refresh_token(
    conn: Connection, token_hash: bytes, session_id: UUID, expires_at: datetime
) -> None:
    await conn.execute(
        "INSERT INTO refresh_tokens (token_hash, session_id, expires_at) VALUES ($1, $2, $3)",
        token_hash,
        session_id,
        expires_at,
    )


async def refresh_token(conn: Connection, token_hash: bytes) -> Row | None:
    """The token with its session, locked for the rotation."""
    return await conn.fetchrow(
        "SELECT r.token_hash, r.used_at, r.expires_at, r.successor_hash, r.successor_sealed,"
        " s.id AS session_id, s.principal_id, s.kind, s.revoked_at"
        " FROM refresh_tokens r JOIN sessions s ON s.id = r.session_id"
        " WHERE r.token_hash = $1 FOR UPDATE OF r, s",
        token_hash,
    )


async def spend_refresh_token(
    conn: Connection, token_hash: bytes, successor_hash: bytes, successor_sealed: bytes
) -> None:
    await conn.execute(
        "UPDATE refresh_tokens SET used_at = now(), successor_hash = $2, successor_sealed = $3"
        " WHERE token_hash = $1",
        token_hash,
        successor_hash,
        successor_sealed,
    )


async def unused_refresh_token(conn: Connection, token_hash: bytes) -> bool:
    """Whether the token exists, unused and unexpired (locked until the transaction ends)."""
    return bool(
        await conn.fetchval(
            "SELECT used_at IS NULL AND expires_at > now() FROM refresh_tokens"
            " WHERE token_hash = $1 FOR UPDATE",
            token_hash,
        )
    )


# -- login throttling ------------------------------------------------------------------


async def lock_throttle(conn: Connection, key: bytes, scope: str = "account") -> Row:
    """The account's (or ``scope``'s) counter, created at 0 if new and locked until the
    transaction ends (one round trip: the upsert takes the lock and answers the latest
    committed row)."""
    row = await conn.fetchrow(
        "INSERT INTO login_throttle (key, scope, failures) VALUES ($1, $2, 0)"
        " ON CONFLICT (key) DO UPDATE SET failures = login_throttle.failures RETURNING *",
        key,
        scope,
    )
    assert row is not None
    return row


async def throttle_counter(conn: Connection, key: bytes) -> Row | None:
    return await conn.fetchrow("SELECT * FROM login_throttle WHERE key = $1", key)


async def save_throttle(
    conn: Connection,
    key: bytes,
    scope: str,
    failures: int,
    last_failure_at: datetime,
    blocked_until: datetime | None,
    locked: bool,
) -> None:
    await conn.execute(
        "INSERT INTO login_throttle (key, scope, failures, last_failure_at, blocked_until, locked)"
        " VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (key) DO UPDATE SET"
        " failures = $3, last_failure_at = $4, blocked_until = $5, locked = $6",
        key,
        scope,
        failures,
        last_failure_at,
        blocked_until,
        locked,
    )


async def lock_user_within(conn: Connection, user_id: UUID, timeout_ms: int) -> bool:
    """Lock the user's row, waiting ``timeout_ms`` at most; False if it stayed held.
    For answers kept to a floor time: an unbounded wait would queue the requests for a
    registered address one after another, and their timing would tell it is one."""
    try:
        async with conn.transaction():  # a savepoint: a timeout undoes only this
            await conn.execute(f"SET LOCAL lock_timeout = {int(timeout_ms)}")
            await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user_id)
            await conn.execute("SET LOCAL lock_timeout = DEFAULT")
    except asyncpg.LockNotAvailableError:
        return False
    return True


async def lock_if_reauthenticated(
    conn: Connection, user_id: UUID, session_id: UUID, password_hash: str | None
) -> bool:
    """Lock the user's row if its password is still ``password_hash`` and the session
    still open: what a re-authentication checked, outside this transaction, still holds."""
    held = await conn.fetchval(
        "SELECT 1 FROM users u JOIN sessions s ON s.principal_id = u.id"
        " WHERE u.id = $1 AND u.password_hash = $2 AND s.id = $3 AND s.revoked_at IS NULL"
        " FOR UPDATE OF u",
        user_id,
        password_hash,
        session_id,
    )
    return held is not None


async def hold_password(conn: Connection, user_id: UUID, password_hash: str | None) -> bool:
    """Whether the user's password is still ``password_hash``, holding the row (FOR SHARE)
    until the transaction ends, so that no password change can commit meanwhile."""
    held = await conn.fetchval(
        "SELECT 1 FROM users WHERE id = $1 AND password_hash = $2 FOR SHARE",
        user_id,
        password_hash,
    )
    return held is not None


async def lock_login(conn: Connection, user_id: UUID) -> None:
    """Lock the account's logins until a new password (not a card change: no version)."""
    await conn.execute("UPDATE users SET login_locked = true WHERE id = $1", user_id)


async def clear_throttle(conn: Connection, key: bytes) -> None:
    await conn.execute("DELETE FROM login_throttle WHERE key = $1", key)


# -- operators -------------------------------------------------------------------------


async def hold_operator(conn: Connection, operator_id: UUID, password_hash: str) -> Row | None:
    """The operator's row as it is now, if still enabled and with ``password_hash``,
    held (FOR SHARE) until the transaction ends: a password set, a disabling or a role
    change then waits for the session being opened (and ends it), or came first (and
    the login is refused, or its session takes the new roles)."""
    return await conn.fetchrow(
        "SELECT * FROM operators WHERE id = $1 AND password_hash = $2 AND disabled_at IS NULL"
        " FOR SHARE",
        operator_id,
        password_hash,
    )


async def operator_by_email_index(conn: Connection, index: bytes) -> Row | None:
    return await conn.fetchrow(
        "SELECT * FROM operators WHERE email_index = $1 AND disabled_at IS NULL", index
    )


async def insert_operator(
    conn: Connection,
    operator_id: UUID,
    email_index: bytes,
    email: bytes,
    password_hash: str,
    roles: Sequence[str],
    created_by: UUID | None,
    *,
    own_password: bool = False,
) -> bool:
    """Insert an operator; False when the email (blind index) is taken. Its password is
    provisional (its creator's choice) unless ``own_password`` (a configured first
    admin's, which no other operator chose)."""
    status = await conn.execute(
        "INSERT INTO operators (id, email_index, email, password_hash, roles, created_by,"
        " password_set_at) VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $7 THEN now() END)"
        " ON CONFLICT (email_index) DO NOTHING",
        operator_id,
        email_index,
        email,
        password_hash,
        list(roles),
        created_by,
        own_password,
    )
    return status == "INSERT 0 1"


async def operator_by_id(conn: Connection, operator_id: UUID) -> Row | None:
    """The operator, disabled or not."""
    return await conn.fetchrow("SELECT * FROM operators WHERE id = $1", operator_id)


async def active_operator(conn: Connection, operator_id: UUID) -> Row | None:
    """The operator unless disabled: who may sign in, re-authenticate, act."""
    return await conn.fetchrow(
        "SELECT * FROM operators WHERE id = $1 AND disabled_at IS NULL", operator_id
    )


async def lock_active_admins(conn: Connection) -> set[UUID]:
    """The operators who are admins and not disabled, locked till the transaction ends:
    two admins disabling (or demoting) each other at once are judged one after the
    other, so at least one admin always stays."""
    rows = await conn.fetch(
        "SELECT id FROM operators WHERE 'admin' = ANY(roles) AND disabled_at IS NULL"
        " ORDER BY id FOR UPDATE"
    )
    return {r["id"] for r in rows}


async def set_own_password(
    conn: Connection, operator_id: UUID, session_id: UUID, old_hash: str, new_hash: str
) -> bool:
    """Replace the operator's password, set by its owner now, if it is still
    ``old_hash``, the operator not disabled and the session still open (what the
    re-authentication checked, outside this transaction, still holds); False if not."""
    status = await conn.execute(
        "UPDATE operators o SET password_hash = $4, password_set_at = now()"
        " FROM sessions s WHERE o.id = $1 AND o.password_hash = $3 AND o.disabled_at IS NULL"
        " AND s.id = $2 AND s.principal_id = o.id AND s.revoked_at IS NULL",
        operator_id,
        session_id,
        old_hash,
        new_hash,
    )
    return status == "UPDATE 1"


async def operator_creators(conn: Connection, operator_id: UUID) -> set[UUID]:
    """Every operator who created this identity, or created its creator, and so on. Each
    chose the first password of this identity or of one that could create it, so each
    may have acted as it."""
    rows = await conn.fetch(
        "WITH RECURSIVE creators (id) AS ("
        " SELECT created_by FROM operators WHERE id = $1"
        " UNION"  # not ALL: a cycle (impossible through the API) still ends
        " SELECT o.created_by FROM operators o JOIN creators c ON o.id = c.id"
        ") SELECT id FROM creators WHERE id IS NOT NULL",
        operator_id,
    )
    return {r["id"] for r in rows}


async def audit(
    conn: Connection,
    operator_id: UUID,
    subject_id: UUID,
    action: str,
    fields: Sequence[str],
    purpose: str,
    request_reference: str | None = None,
) -> None:
    """One append-only audit row; call inside the transaction of the read or change.

    The database links the row into the audit hash chain (005_audit_chain.sql); its
    place and hash go out on accounts.audit in this same transaction, out of reach of
    anyone who can rewrite the table.
    """
    linked = await conn.fetchrow(
        "INSERT INTO audit_log (operator_id, subject_id, action, fields, purpose,"
        " request_reference) VALUES ($1, $2, $3, $4, $5, $6) RETURNING chain_seq, chain",
        operator_id,
        subject_id,
        action,
        list(fields),
        purpose,
        request_reference,
    )
    assert linked is not None
    appended = AuditLogAppended(chain_seq=linked["chain_seq"], chain=linked["chain"].hex())
    await add_event(conn, appended, source=SOURCE, subject=AUDIT_CHAIN_KEY)


async def audit_each(
    conn: Connection,
    operator_id: UUID,
    subject_ids: Sequence[UUID],
    action: str,
    fields: Sequence[str],
    purpose: str,
) -> None:
    """One audit row per subject, as :func:`audit` writes them, in one statement.

    The first row takes the audit chain's lock, held until the transaction commits:
    call it last, once the transaction's reads and changes are done, so that the audited
    reads and changes of every other operator wait for the commit only.
    """
    if not subject_ids:
        return
    linked = await conn.fetch(
        "INSERT INTO audit_log (operator_id, subject_id, action, fields, purpose)"
        " SELECT $1, s, $3, $4, $5 FROM unnest($2::uuid[]) WITH ORDINALITY AS t(s, n)"
        " ORDER BY n RETURNING chain_seq, chain",
        operator_id,
        list(subject_ids),
        action,
        list(fields),
        purpose,
    )
    appended = [
        (AuditLogAppended(chain_seq=r["chain_seq"], chain=r["chain"].hex()), AUDIT_CHAIN_KEY)
        for r in sorted(linked, key=lambda r: r["chain_seq"])
    ]
    await add_events(conn, appended, source=SOURCE)


# -- devices, requests -----------------------------------------------------------------


async def devices_of(conn: Connection, user_id: UUID) -> list[Row]:
    return await conn.fetch(
        "SELECT * FROM devices WHERE user_id = $1 ORDER BY created_at, id", user_id
    )


async def users_by_ids(conn: Connection, user_ids: Sequence[UUID]) -> dict[UUID, Row]:
    """The users of ``user_ids`` that exist, by id, in one query."""
    rows = await conn.fetch("SELECT * FROM users WHERE id = ANY($1::uuid[])", list(user_ids))
    return {r["id"]: r for r in rows}


async def devices_of_users(conn: Connection, user_ids: Sequence[UUID]) -> dict[UUID, list[Row]]:
    """Each user's devices (as :func:`devices_of` orders them), in one query; a user
    without devices has none listed."""
    rows = await conn.fetch(
        "SELECT * FROM devices WHERE user_id = ANY($1::uuid[]) ORDER BY user_id, created_at, id",
        list(user_ids),
    )
    devices: dict[UUID, list[Row]] = {}
    for row in rows:
        devices.setdefault(row["user_id"], []).append(row)
    return devices


async def device_of(
    conn: Connection, user_id: UUID, device_id: UUID, *, lock: bool = False
) -> Row | None:
    """The user's device; ``lock`` holds it till the transaction ends, so a concurrent
    delete either waits or has already taken it (None: 404, never a half-done edit)."""
    suffix = " FOR UPDATE" if lock else ""
    return await conn.fetchrow(
        f"SELECT * FROM devices WHERE id = $1 AND user_id = $2{suffix}",  # noqa: S608
        device_id,
        user_id,
    )


async def requests_of(conn: Connection, user_id: UUID) -> list[Row]:
    return await conn.fetch(
        "SELECT * FROM requests WHERE user_id = $1 ORDER BY created_at, id", user_id
    )


async def request_of(
    conn: Connection, user_id: UUID, request_id: UUID, *, lock: bool = False
) -> Row | None:
    """The user's request; ``lock`` as for ``device_of`` (a message added to a request
    being deleted would otherwise fail on its foreign key)."""
    suffix = " FOR UPDATE" if lock else ""
    return await conn.fetchrow(
        f"SELECT * FROM requests WHERE id = $1 AND user_id = $2{suffix}",  # noqa: S608
        request_id,
        user_id,
    )


async def messages_of(conn: Connection, request_id: UUID) -> list[Row]:
    return await conn.fetch(
        "SELECT * FROM request_messages WHERE request_id = $1 ORDER BY created_at, id",
        request_id,
    )


async def add_message(
    conn: Connection,
    message_id: UUID,
    request_id: UUID,
    author: str,
    body: bytes,
    operator_id: UUID | None = None,
) -> None:
    await conn.execute(
        "INSERT INTO request_messages (id, request_id, author, operator_id, body)"
        " VALUES ($1, $2, $3, $4, $5)",
        message_id,
        request_id,
        author,
        operator_id,
        body,
    )


# -- consents --------------------------------------------------------------------------


async def current_consents(conn: Connection, user_id: UUID) -> list[Row]:
    return await conn.fetch(
        "SELECT DISTINCT ON (recipient_id, purpose) recipient_id, purpose, granted, at"
        " FROM consents WHERE user_id = $1 ORDER BY recipient_id, purpose, id DESC",
        user_id,
    )


_CONSENTING = """
SELECT user_id FROM (
    SELECT DISTINCT ON (user_id) user_id, granted FROM consents
    WHERE recipient_id = $1 AND purpose = $2{wanted} ORDER BY user_id, id DESC
) c JOIN users u ON u.id = c.user_id
WHERE c.granted AND u.active AND u.age_band <> 'under_13'
  AND NOT EXISTS (SELECT 1 FROM deletion_requests d WHERE d.user_id = c.user_id
                  AND d.status IN ('requested', 'confirmed'))
ORDER BY c.user_id{first}
"""


async def consenting_users(
    conn: Connection,
    recipient_id: UUID,
    purpose: str,
    *,
    after: UUID | None = None,
    among: Sequence[UUID] | None = None,
    limit: int | None = None,
) -> list[UUID]:
    """Active users whose latest choice for this recipient and purpose is a grant, in
    id order: those after ``after`` (keyset paging), only those ``among`` these ids if
    given, the first ``limit`` at most.

    Never a child under 13: a child's own consent is not consent to disclose their data
    (COPPA, P-26), and no guardian consents to a disclosure (the guardian's consent on
    record is to the account alone). Never a user whose deletion is under way (in its
    grace period, or confirmed and waiting, a legal hold say): a recipient given them
    now would hold what the user asked to have erased. A request is made with the
    user's row locked, so an export that holds the row and reads again sees it.
    """
    # Conditions only when given: a page is found by the consents_current index
    # (recipient, purpose, user), from ``after`` on, which an "$n IS NULL OR" would hide
    # from the plan a prepared statement settles on.
    args: list[Any] = [recipient_id, purpose]
    wanted = ""
    if after is not None:
        args.append(after)
        wanted += f" AND user_id > ${len(args)}"
    if among is not None:
        args.append(list(among))
        wanted += f" AND user_id = ANY(${len(args)}::uuid[])"
    first = ""
    if limit is not None:
        args.append(limit)
        first = f" LIMIT ${len(args)}"
    rows = await conn.fetch(_CONSENTING.format(wanted=wanted, first=first), *args)
    return [r["user_id"] for r in rows]


async def log_disclosures(
    conn: Connection,
    export_id: UUID,
    recipient_id: UUID,
    operator_id: UUID,
    user_ids: Sequence[UUID],
    fields: Sequence[str],
) -> list[UUID]:
    """Log the disclosure of ``fields`` of each user to the recipient in this export,
    once per user and export (migration 019): the users logged now, in the order given,
    without those the export had already disclosed."""
    rows = await conn.fetch(
        "INSERT INTO disclosures (export_id, recipient_id, user_id, fields, operator_id)"
        " SELECT $1, $2, u, $4, $5 FROM unnest($3::uuid[]) WITH ORDINALITY AS t(u, n)"
        " ORDER BY n ON CONFLICT (export_id, user_id) DO NOTHING RETURNING user_id",
        export_id,
        recipient_id,
        list(user_ids),
        list(fields),
        operator_id,
    )
    logged = {r["user_id"] for r in rows}
    return [uid for uid in user_ids if uid in logged]


# -- invoices (financial records) ------------------------------------------------------


async def insert_invoice(conn: Connection, **columns: Any) -> bool:
    """Record an invoice; False when its number is taken."""
    names = list(columns)
    placeholders = ", ".join(f"${i}" for i in range(1, len(names) + 1))
    status = await conn.execute(
        f"INSERT INTO invoices ({', '.join(names)}) VALUES ({placeholders})"  # noqa: S608 - names are ours
        " ON CONFLICT (number) DO NOTHING",
        *columns.values(),
    )
    return status == "INSERT 0 1"


async def invoices_of(conn: Connection, user_id: UUID) -> list[Row]:
    return await conn.fetch(
        "SELECT * FROM invoices WHERE user_id = $1 ORDER BY issued_on, number", user_id
    )
