"""Legal holds, kept per subject (the deletion database only).

An operator places a hold through one of the subject's requests, but it holds the
subject: cancelling that request does not take the hold away, and a request the subject
makes later starts paused. Only the operator's release ends it. Placed again while in
force, it is restated: the hold keeps its first placement (who, when, why, through which
request), and the restatement is recorded beside it.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from uuid import UUID

import asyncpg

from shared.db import Connection


@dataclass(frozen=True)
class Hold:
    reason: str
    placed_by: UUID | None
    placed_at: datetime
    request_id: UUID | None = None  # placed through this request


@dataclass(frozen=True)
class Restatement:
    """A hold placed again while in force: recorded, never written over the placement."""

    reason: str
    stated_by: UUID | None
    stated_at: datetime
    request_id: UUID


# One advisory lock per subject; the prefix keeps it apart from any other advisory lock.
_SUBJECT_KEY = "hashtextextended('deletion.legal_hold:' || $1::uuid::text, 0)"


async def lock_subject(conn: Connection, subject_id: UUID) -> None:
    """Serialise operators' hold actions on one subject for this transaction.

    Each locks several of the subject's requests; two at once, each starting from a
    different request, would otherwise lock them in opposite orders.
    """
    await conn.execute(f"SELECT pg_advisory_xact_lock({_SUBJECT_KEY})", subject_id)


async def try_lock_subject(conn: Connection, subject_id: UUID) -> bool:
    """:func:`lock_subject` if no one holds it now; False (and no wait) if someone does."""
    return bool(
        await conn.fetchval(f"SELECT pg_try_advisory_xact_lock({_SUBJECT_KEY})", subject_id)
    )


async def in_force(conn: Connection, subject_id: UUID) -> Hold | None:
    row = await conn.fetchrow(
        "SELECT reason, placed_by, placed_at, request_id FROM legal_holds"
        " WHERE subject_id = $1 AND released_at IS NULL FOR SHARE",
        subject_id,
    )
    return None if row is None else _hold(row)


def _hold(row: asyncpg.Record) -> Hold:
    return Hold(row["reason"], row["placed_by"], row["placed_at"], row["request_id"])


async def shown(conn: Connection, subject_id: UUID) -> tuple[Hold, list[Restatement]] | None:
    """The subject's hold in force, as operators see it: its placement and each
    restatement since, oldest first (read without a lock)."""
    row = await conn.fetchrow(
        "SELECT id, reason, placed_by, placed_at, request_id FROM legal_holds"
        " WHERE subject_id = $1 AND released_at IS NULL",
        subject_id,
    )
    if row is None:
        return None
    restated = await conn.fetch(
        "SELECT reason, stated_by, stated_at, request_id FROM legal_hold_restatements"
        " WHERE hold_id = $1 ORDER BY id",
        row["id"],
    )
    return _hold(row), [
        Restatement(r["reason"], r["stated_by"], r["stated_at"], r["request_id"]) for r in restated
    ]


async def place(
    conn: Connection,
    subject_id: UUID,
    reason: str,
    operator: UUID,
    now: datetime,
    request_id: UUID,
) -> bool:
    """Hold the subject; False if a hold was in force already, which is then restated.

    The caller holds the subject's lock (:func:`lock_subject`): no release comes between.
    """
    status = await conn.execute(
        "INSERT INTO legal_holds (subject_id, reason, placed_by, placed_at, request_id)"
        " VALUES ($1, $2, $3, $4, $5)"
        " ON CONFLICT (subject_id) WHERE released_at IS NULL DO NOTHING",
        subject_id,
        reason,
        operator,
        now,
        request_id,
    )
    if status == "INSERT 0 1":
        return True
    await conn.execute(
        "INSERT INTO legal_hold_restatements (hold_id, reason, stated_by, stated_at, request_id)"
        " SELECT id, $2, $3, $4, $5 FROM legal_holds"
        " WHERE subject_id = $1 AND released_at IS NULL",
        subject_id,
        reason,
        operator,
        now,
        request_id,
    )
    return False


async def release(conn: Connection, subject_id: UUID, operator: UUID, now: datetime) -> bool:
    """End the subject's hold (the row stays as its record); False if none was in force."""
    status = await conn.execute(
        "UPDATE legal_holds SET released_at = $3, released_by = $2"
        " WHERE subject_id = $1 AND released_at IS NULL",
        subject_id,
        operator,
        now,
    )
    return bool(status == "UPDATE 1")
