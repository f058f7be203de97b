"""An erased subject leaves no trace in notices scheduled for later, on PostgreSQL.

A scheduled notice keeps its listed recipients' ids until its time comes. An erasure
in between removes the subject's id from that list: when the notice fans out, it
reaches the others and writes no inbox item or delivery for the erased subject.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from services.notifier import handlers, store


async def test_an_erasure_removes_the_subject_from_notices_scheduled_for_later(
    pool: asyncpg.Pool,
) -> None:
    subject, other = uuid.uuid4(), uuid.uuid4()
    notice = store.Notice(
        notice_id=uuid.uuid4(),
        template="service_announcement",
        category="service_announcement",
        audience="listed",
        user_ids=(subject, other),
        params={"subject": "Shop closed on Friday", "message": "Closed for inventory."},
        channels=("inbox", "email"),
        recipient="user",
        pinned=False,
        source="test",
        send_at=datetime.now(UTC) + timedelta(hours=1),
    )
    async with pool.acquire() as conn, conn.transaction():
        await handlers.accept_notice(conn, notice)
        erased = await store.erase_subject_rows(conn, subject)
    assert erased["scheduled_notices"] == 1
    listed = await pool.fetchval(
        "SELECT listed FROM notices WHERE notice_id = $1", notice.notice_id
    )
    assert listed == [other]

    await pool.execute(
        "UPDATE notices SET send_at = now() - interval '1 second' WHERE notice_id = $1",
        notice.notice_id,
    )
    async with pool.acquire() as conn, conn.transaction():
        assert await handlers.fan_out_due(conn) == 1
        await store.plan_email_chunk(conn, 100)  # the emails are planned from the inbox items
    for table in ("inbox_items", "deliveries"):
        users = await pool.fetch(
            f"SELECT user_id FROM {table} WHERE notice_id = $1",
            notice.notice_id,
        )
        assert [r["user_id"] for r in users] == [other], table
    # A second erasure finds nothing more to remove.
    async with pool.acquire() as conn, conn.transaction():
        assert (await store.erase_subject_rows(conn, subject))["scheduled_notices"] == 0
