"""The accounts worker's retention round deletes what no longer serves, and only that."""

from __future__ import annotations

import uuid

import asyncpg

from services.accounts.config import AccountsSettings
from services.accounts.retention import Retention
from tests.integration.accounts.users import stored_user


async def test_a_round_deletes_spent_counters_expired_links_and_dead_sessions(
    pool: asyncpg.Pool,
) -> None:
    async with pool.acquire() as conn:
        uid = await stored_user(conn)
        await conn.executemany(
            "INSERT INTO login_throttle (key, scope, failures, last_failure_at)"
            " VALUES ($1, $2, 3, now() - make_interval(secs => $3))",
            [
                (b"client-spent", "client", 7200.0),  # window and back-off long past
                (b"client-recent", "client", 60.0),
                (b"account-old", "account", 7 * 86_400.0),  # counts towards a lock
                (b"account-forgotten", "account", 181 * 86_400.0),  # past fraud_abuse
            ],
        )
        await conn.executemany(
            "INSERT INTO action_tokens (token_hash, user_id, purpose, expires_at, created_at)"
            " VALUES ($1, $2, 'verify_email', now() - make_interval(secs => $3),"
            " now() - interval '3 days')",
            [(b"expired-long-ago", uid, 2 * 86_400.0), (b"expired-just-now", uid, 3600.0)],
        )
        await conn.executemany(
            "INSERT INTO sessions (id, principal_id, kind, created_at)"
            " VALUES ($1, $2, 'user', now() - make_interval(days => $3))",
            [(name, uid, age) for name, age in _SESSIONS.items()],
        )
        await conn.executemany(
            "INSERT INTO refresh_tokens (token_hash, session_id, expires_at)"
            " VALUES ($1, $2, now() + make_interval(days => $3))",
            [(b"dead", _DEAD, -5), (b"alive", _ALIVE, 10)],
        )

    await Retention(pool, AccountsSettings(environment="test")).round()

    async with pool.acquire() as conn:
        counters = {r["key"] for r in await conn.fetch("SELECT key FROM login_throttle")}
        tokens = {r["token_hash"] for r in await conn.fetch("SELECT token_hash FROM action_tokens")}
        sessions = {r["id"] for r in await conn.fetch("SELECT id FROM sessions")}
        refresh = {
            r["token_hash"] for r in await conn.fetch("SELECT token_hash FROM refresh_tokens")
        }
    assert counters == {b"client-recent", b"account-old"}
    assert tokens == {b"expired-just-now"}
    assert sessions == {_ALIVE, _NEW}
    assert refresh == {b"alive"}


_DEAD, _ALIVE, _NEW = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
_SESSIONS = {_DEAD: 40, _ALIVE: 40, _NEW: 0}  # id: age in days
