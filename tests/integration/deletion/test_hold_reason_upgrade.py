"""The upgrade that takes a legal hold's words out of the requests it paused, on real
PostgreSQL: they stay in legal_holds only."""

from __future__ import annotations

import uuid

import asyncpg

from services.deletion.bootstrap import DATABASE, MIGRATIONS
from shared.db.migrations import apply_migrations
from tests.support.migrations import split_at

BEFORE = "011_hold_reason_code"
WORDS = "case 2025-117, Smith v. Example"


def _reasons(rows: list[asyncpg.Record]) -> dict[uuid.UUID, str]:
    return {r["request_id"]: r["reason"] for r in rows}


async def test_paused_requests_and_their_history_keep_the_code_only(scratch_dsn: str) -> None:
    before, after = split_at(DATABASE, MIGRATIONS, BEFORE)
    conn = await asyncpg.connect(scratch_dsn)
    try:
        await apply_migrations(conn, before)
        paused, escalated, subject = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        for request_id, stage, reason in (
            (paused, "paused", WORDS),
            (escalated, "escalated", "no answer in time from: analytics"),
        ):
            await conn.execute(
                "INSERT INTO deletion_requests (request_id, subject_id, scope, initiated_by,"
                " stage, stage_entered_at, requested_at, grace_ends_at, reason)"
                " VALUES ($1, $2, 'account', 'user', $3, now(), now(), now(), $4)",
                request_id, subject, stage, reason,
            )  # fmt: skip
            await conn.execute(
                "INSERT INTO stage_history (request_id, stage, reason, entered_at)"
                " VALUES ($1, $2, $3, now())",
                request_id, stage, reason,
            )  # fmt: skip
        await conn.execute(
            "INSERT INTO legal_holds (subject_id, reason, placed_at, request_id)"
            " VALUES ($1, $2, now(), $3)",
            subject, WORDS, paused,
        )  # fmt: skip
        await apply_migrations(conn, after)
        requests = _reasons(await conn.fetch("SELECT request_id, reason FROM deletion_requests"))
        history = _reasons(await conn.fetch("SELECT request_id, reason FROM stage_history"))
        held = await conn.fetchval("SELECT reason FROM legal_holds")
    finally:
        await conn.close()
    assert (
        requests
        == history
        == {
            paused: "legal_hold",
            escalated: "no answer in time from: analytics",
        }
    )
    assert held == WORDS
