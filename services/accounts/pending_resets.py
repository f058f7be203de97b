"""Password resets asked for while the account's row was held, mailed by the worker.

A reset request answers no sooner and no later than its floor: its timing must not tell
that the address is registered, so it waits for the user's row (an export holds it for
as long as it reads) half the floor at most. Past that, the request records the reset
here, in a short transaction of its own that waits for nothing, and answers. A round
of the accounts worker mails it once the row is free, with the interval between mails
applied as ever (:func:`~services.accounts.reset_links.mail_reset_link`), and deletes
the record in the same transaction: a replica of the API stopped or rolled meanwhile
loses nothing, and the replicas of the worker share the records (``SKIP LOCKED``).
"""

from __future__ import annotations

import logging
from uuid import UUID

from services.accounts.context import Context
from services.accounts.reset_links import mail_reset_link
from shared.db.pool import Connection
from shared.service.periodic import Periodic

log = logging.getLogger(__name__)
BATCH = 100

# The record and its user's row, both locked: a row still held (the export still
# reading) or a record another replica took is skipped, and seen again next round.
_CLAIM = """
SELECT p.user_id FROM pending_resets p JOIN users u ON u.id = p.user_id
ORDER BY p.asked_at
LIMIT $1
FOR UPDATE OF p, u SKIP LOCKED
"""
# Records of users gone (an erasure deletes its own; one a restored snapshot brought
# back has no account to mail).
_ORPHANS = """
DELETE FROM pending_resets WHERE user_id IN (
    SELECT p.user_id FROM pending_resets p
    WHERE NOT EXISTS (SELECT 1 FROM users u WHERE u.id = p.user_id)
    FOR UPDATE SKIP LOCKED
)
"""


async def record(conn: Connection, user_id: UUID) -> None:
    """Record a reset to mail once the user's row is free (outside any transaction of
    the caller's: it commits at once). One per user: the interval allows one mail."""
    await conn.execute(
        "INSERT INTO pending_resets (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING",
        user_id,
    )


class PendingResets(Periodic):
    name = "pending-resets"

    def __init__(self, ctx: Context, interval_seconds: float) -> None:
        super().__init__()
        self._ctx = ctx
        self._interval = interval_seconds

    def interval(self) -> float:
        return self._interval

    async def round(self) -> bool:
        mailed = 0
        async with self._ctx.pool.acquire() as conn, conn.transaction():
            claimed: list[UUID] = [r["user_id"] for r in await conn.fetch(_CLAIM, BATCH)]
            for user_id in claimed:
                # Not when one went out within the interval (an address is never
                # flooded) or the account's erasure is under way: the record goes anyway.
                mailed += await mail_reset_link(self._ctx, conn, user_id)
            if claimed:
                await conn.execute(
                    "DELETE FROM pending_resets WHERE user_id = ANY($1::uuid[])", claimed
                )
            orphans = int((await conn.execute(_ORPHANS)).split()[-1])
        if claimed or orphans:
            log.info(
                "pending resets: %d mailed, %d not (interval or erasure), %d of users gone",
                mailed,
                len(claimed) - mailed,
                orphans,
            )
        return len(claimed) == BATCH
