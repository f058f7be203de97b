"""The email planner walks a notice's inbox items; one that has none has nothing to plan,
and is marked planned at its fan-out instead of being left to a search that finds none."""

from __future__ import annotations

import uuid

import asyncpg

from services.notifier import handlers, store


def _reply_to(user_id: uuid.UUID) -> store.Notice:
    return store.Notice(
        notice_id=uuid.uuid4(), template="request_reply", category="transactional",
        audience="listed", user_ids=(user_id,), params={"request_id": str(uuid.uuid4())},
        channels=("email", "inbox"), recipient="user", pinned=False, source="test",
    )  # fmt: skip


async def test_a_notice_that_reaches_no_inbox_has_no_email_left_to_plan(
    pool: asyncpg.Pool,
) -> None:
    erased = uuid.uuid4()  # a late reply to an account erased here: nobody to tell
    await pool.execute(
        "INSERT INTO erasures (request_id, subject_id, state, whole_account, erased_at)"
        " VALUES ($1, $2, 'done', true, now())",
        uuid.uuid4(),
        erased,
    )
    notice = _reply_to(erased)
    async with pool.acquire() as conn, conn.transaction():
        assert await handlers.accept_notice(conn, notice) == 0
    assert await pool.fetchval(
        "SELECT email_planned FROM notices WHERE notice_id = $1", notice.notice_id
    )
    async with pool.acquire() as conn, conn.transaction():
        assert await store.plan_email_chunk(conn, 100) is None


async def test_a_notice_with_inbox_items_plans_their_emails(pool: asyncpg.Pool) -> None:
    notice = _reply_to(uuid.uuid4())
    async with pool.acquire() as conn, conn.transaction():
        assert await handlers.accept_notice(conn, notice) == 1
    async with pool.acquire() as conn, conn.transaction():
        assert await store.plan_email_chunk(conn, 100) == 1
    assert await pool.fetchval(
        "SELECT count(*) FROM deliveries WHERE notice_id = $1", notice.notice_id
    )
