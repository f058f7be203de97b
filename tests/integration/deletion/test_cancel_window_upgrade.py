"""The upgrade to the cancel window on real PostgreSQL: requests already erasing keep
going, and no request accounts could still cancel is taken as confirmed."""

from __future__ import annotations

import uuid

import asyncpg

from services.deletion.bootstrap import DATABASE, MIGRATIONS
from shared.db.migrations import apply_migrations
from tests.support.migrations import split_at

BEFORE = "005_cancel_window"  # the first migration that knows the window


async def test_only_requests_past_holds_are_taken_as_confirmed(scratch_dsn: str) -> None:
    before, after = split_at(DATABASE, MIGRATIONS, BEFORE)
    conn = await asyncpg.connect(scratch_dsn)
    try:
        await apply_migrations(conn, before)
        rows = {
            "grace": ("grace", None),
            "holds": ("holds", None),
            "paused in grace": ("paused", "grace"),
            "paused in holds": ("paused", "holds"),
            "erasing": ("erasing", None),
            "shredded": ("shredded", None),
            "cancelled": ("cancelled", None),
        }
        ids = {}
        for name, (stage, paused_from) in rows.items():
            ids[name] = uuid.uuid4()
            await conn.execute(
                "INSERT INTO deletion_requests (request_id, subject_id, scope, initiated_by,"
                " stage, stage_entered_at, requested_at, grace_ends_at, paused_from)"
                " VALUES ($1, $2, 'account', 'user', $3, now(), now(), now(), $4)",
                ids[name], uuid.uuid4(), stage, paused_from,
            )  # fmt: skip
        await apply_migrations(conn, after)
        closed = {
            name: await conn.fetchval(
                "SELECT cancel_window_closed_at IS NOT NULL FROM deletion_requests"
                " WHERE request_id = $1",
                request_id,
            )
            for name, request_id in ids.items()
        }
    finally:
        await conn.close()
    assert {name for name, is_closed in closed.items() if is_closed} == {"erasing", "shredded"}
