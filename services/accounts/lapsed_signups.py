"""A sign-up never completed is not kept: the accounts worker has it erased everywhere.

An account becomes active once its address is verified and, under 13, once a guardian
consented. One still inactive ``accounts_signup_lapse_days`` after sign-up, with every
verification and consent link mailed for it expired, is a lapsed
sign-up: a child's data held without a guardian's consent (P-26), or an address someone
typed and never confirmed. The round records a deletion request (``retention``), spends
the account's links, and publishes :class:`SignupLapsed`; the deletion service erases it
in every store, backups included, as it would any account (P-13, P-14).

While that runs, the account stays out of reach: its links are gone, a password reset
mails nothing (as for an unknown address), and nothing can activate it.
"""

from __future__ import annotations

import logging
from uuid import UUID, uuid4

import asyncpg

from services.accounts.context import emit
from shared.db.pool import Connection
from shared.events.catalogue.accounts import SignupLapsed
from shared.service.periodic import Periodic

log = logging.getLogger(__name__)
BATCH = 200

# Rows another transaction holds (a link being used, a reset being mailed) are skipped:
# the next round sees them settled. A live verification or consent link defers the
# lapse; a password-reset link does not: anyone who knows the address can ask for one
# every few minutes, and a child's data would then be kept for good. Only a deletion
# under way defers it, never one awaiting an operator's approval: that may never come,
# and its approval, if it does, answers 409 deletion-under-way (one deletion at a time).
_LAPSING = """
WHERE NOT u.active
  AND u.created_at < now() - make_interval(days => $1)
  AND NOT EXISTS (
      SELECT 1 FROM action_tokens t
      WHERE t.user_id = u.id AND t.used_at IS NULL AND t.expires_at > now()
        AND t.purpose <> 'password_reset'
  )
  AND NOT EXISTS (
      SELECT 1 FROM deletion_requests d
      WHERE d.user_id = u.id AND d.status IN ('requested', 'confirmed')
  )
"""
_LAPSED = f"""
SELECT u.id FROM users u {_LAPSING}
ORDER BY u.created_at
LIMIT $2
FOR UPDATE OF u SKIP LOCKED
"""  # noqa: S608 - constant
# The same test once the rows are locked. PostgreSQL rechecks a locked row's own
# columns, not the other tables: a deletion request (or a link) committed between the
# first statement's snapshot and its lock would pass unseen, and the account would
# have two deletions under way. Any later one waits for the lock held now.
_STILL_LAPSED = f"""
SELECT u.id FROM users u {_LAPSING} AND u.id = ANY($2::uuid[])
ORDER BY u.created_at
"""  # noqa: S608 - constant


async def still_lapsed(conn: Connection, lapse_days: int, locked: list[UUID]) -> list[UUID]:
    """Those of the ``locked`` users that are still lapsed sign-ups, now."""
    if not locked:
        return []
    return [r["id"] for r in await conn.fetch(_STILL_LAPSED, lapse_days, locked)]


async def lapsing(conn: Connection, user_id: UUID) -> bool:
    """Whether the account's erasure as a lapsed sign-up is under way."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM deletion_requests WHERE user_id = $1"
            " AND initiated_by = 'retention' AND status IN ('requested', 'confirmed'))",
            user_id,
        )
    )


class LapsedSignups(Periodic):
    name = "lapsed-signups"

    def __init__(self, pool: asyncpg.Pool, lapse_days: int, interval_seconds: float) -> None:
        super().__init__()
        self._pool = pool
        self._lapse_days = lapse_days
        self._interval = interval_seconds

    def interval(self) -> float:
        return self._interval

    async def round(self) -> bool:
        async with self._pool.acquire() as conn, conn.transaction():
            locked = [r["id"] for r in await conn.fetch(_LAPSED, self._lapse_days, BATCH)]
            lapsed = await still_lapsed(conn, self._lapse_days, locked)
            for user_id in lapsed:
                await _request_erasure(conn, user_id)
        if lapsed:
            log.info("asked for the erasure of %d lapsed sign-ups", len(lapsed))
        return len(locked) == BATCH


async def _request_erasure(conn: Connection, user_id: UUID) -> None:
    request_id = uuid4()
    await conn.execute(
        "INSERT INTO deletion_requests (id, user_id, initiated_by, status)"
        " VALUES ($1, $2, 'retention', 'requested')",
        request_id,
        user_id,
    )
    await conn.execute("DELETE FROM action_tokens WHERE user_id = $1", user_id)
    await emit(conn, SignupLapsed(user_id=user_id, request_id=request_id), user_id)
