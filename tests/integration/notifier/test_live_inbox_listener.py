"""The live inbox keeps pushing after its listening connection is lost, on PostgreSQL.

PostgreSQL restarting (here: the listener's backend terminated) drops every LISTEN of
the API process, silently. The hub notices, listens again, and pushes to the open
streams what was fanned out while it could not hear; later notices arrive as before,
and nothing reaches a stream twice.
"""

from __future__ import annotations

import uuid

import asyncpg
import pytest

from services.notifier import handlers, store
from services.notifier.domain.templates import Renderer
from services.notifier.stream import InboxHub
from tests.integration.notifier.support import listener_deaf
from tests.support.sse import next_event, session_open


async def _announce(pool: asyncpg.Pool, uid: uuid.UUID, subject: str) -> None:
    notice = store.Notice(
        notice_id=uuid.uuid4(),
        template="service_announcement",
        category="service_announcement",
        audience="listed",
        user_ids=(uid,),
        params={"subject": subject, "message": "-"},
        channels=("inbox",),
        recipient="user",
        pinned=False,
        source="test",
    )
    async with pool.acquire() as conn, conn.transaction():
        await handlers.accept_notice(conn, notice)


async def test_a_lost_listener_listens_again_and_pushes_what_it_missed(
    pool: asyncpg.Pool, scratch_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = InboxHub(pool, scratch_dsn, Renderer())
    await hub.start()
    uid = uuid.uuid4()
    events = hub.stream(uid, hub.subscribe(uid), [], session_open)
    try:
        assert (await next_event(events))["event"] == "ready"
        await _announce(pool, uid, "before")
        assert (await next_event(events))["title"] == "before"

        async with listener_deaf(pool, monkeypatch):
            await _announce(pool, uid, "while deaf")
        assert (await next_event(events))["title"] == "while deaf"  # caught up

        await _announce(pool, uid, "after")
        assert (await next_event(events))["title"] == "after"  # heard again
        # "before" was within the catch-up's margin, and was not pushed again.
    finally:
        await events.aclose()
        await hub.close()
