"""The live inbox keeps pushing after its listening connection is lost, on PostgreSQL.

PostgreSQL restarting (here: the listener's backend terminated) drops every LISTEN of
the API process, silently. The hub notices, listens again, and pushes to the open
streams what was fanned out while it could not hear, by the transactions that wrote it
(however long they stayed open); later notices arrive as before, and nothing reaches a
stream twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import Any, cast

import asyncpg
import pytest

from services.notifier import handlers, store, stream
from services.notifier.bootstrap import MIGRATIONS
from services.notifier.domain.templates import Renderer
from services.notifier.stream import InboxHub
from shared.db.migrations import apply_migrations
from tests.integration.notifier.support import listener_deaf, until
from tests.support.migrations import split_at
from tests.support.sse import next_event, session_open


def _announcement(uid: uuid.UUID, subject: str) -> store.Notice:
    return store.Notice(
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


async def _announce(pool: asyncpg.Pool, uid: uuid.UUID, subject: str) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await handlers.accept_notice(conn, _announcement(uid, subject))


@contextlib.asynccontextmanager
async def _live_stream(
    pool: asyncpg.Pool, dsn: str, uid: uuid.UUID
) -> AsyncIterator[AsyncGenerator[str, None]]:
    """A started hub's event stream for ``uid``, past its ``ready``."""
    hub = InboxHub(pool, dsn, Renderer())
    await hub.start()
    events = hub.stream(uid, await hub.subscribe(uid), [], session_open)
    try:
        assert (await next_event(events))["event"] == "ready"
        yield events
    finally:
        await events.aclose()
        await hub.close()


async def test_a_lost_listener_listens_again_and_pushes_what_it_missed(
    pool: asyncpg.Pool, scratch_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    uid = uuid.uuid4()
    async with _live_stream(pool, scratch_dsn, uid) as events:
        await _announce(pool, uid, "before")
        assert (await next_event(events))["title"] == "before"

        async with listener_deaf(pool, monkeypatch):
            await _announce(pool, uid, "while deaf")
        assert (await next_event(events))["title"] == "while deaf"  # caught up

        await _announce(pool, uid, "after")
        assert (await next_event(events))["title"] == "after"  # heard again
        # "before" was read again by the catch-up (no fence had moved the horizon past
        # it yet), and was not pushed again.


async def test_an_item_committed_while_deaf_long_after_it_was_written_is_pushed(
    pool: asyncpg.Pool, scratch_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fan-out's transaction writes its item and its NOTIFY while the listener hears,
    stays open (6 s: longer than the 5 s of margin of the catch-up by clock times this
    replaced) and commits while the listener is lost: the NOTIFY is gone. The catch-up
    finds the item by its transaction, though fences moved the horizon up meanwhile
    (every 0.1 s here): never past a transaction still open."""
    monkeypatch.setattr(stream, "FENCE_SECONDS", 0.1)
    uid = uuid.uuid4()
    async with _live_stream(pool, scratch_dsn, uid) as events:
        async with pool.acquire() as conn:
            fan_out = conn.transaction()
            await fan_out.start()
            await handlers.accept_notice(conn, _announcement(uid, "long open"))
            await asyncio.sleep(6)
            async with listener_deaf(pool, monkeypatch):
                await fan_out.commit()
        assert (await next_event(events))["title"] == "long open"  # caught up

        await _announce(pool, uid, "after")
        assert (await next_event(events))["title"] == "after"  # heard again


async def test_fences_move_the_horizon_past_what_was_heard(
    pool: asyncpg.Pool, scratch_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the listener hears its fences, the horizon moves up past the transactions
    it heard: the catch-up after a loss reads what it missed, not those again."""
    monkeypatch.setattr(stream, "FENCE_SECONDS", 0.1)
    hub = InboxHub(pool, scratch_dsn, Renderer())
    await hub.start()
    uid = uuid.uuid4()
    queue = await hub.subscribe(uid)  # the hub's own queue: what it pushes
    try:
        await _announce(pool, uid, "heard")
        assert (await asyncio.wait_for(queue.get(), 10))["title"] == "heard"
        written = await pool.fetchval(
            "SELECT written_xid::text FROM inbox_items WHERE user_id = $1", uid
        )
        assert written is not None

        async def above() -> bool:
            return bool(
                await pool.fetchval("SELECT $1::text::xid8 > $2::text::xid8", hub._horizon, written)
            )

        await until(above, seconds=10)
        async with listener_deaf(pool, monkeypatch):
            await _announce(pool, uid, "while deaf")
        assert (await asyncio.wait_for(queue.get(), 10))["title"] == "while deaf"
        # "heard" (an older id, so pushed first) was not read again: the fence that moved
        # the horizon past it made the hub forget it had pushed it.
        assert queue.empty()
    finally:
        hub.unsubscribe(uid, queue)
        await hub.close()


async def test_the_upgrade_leaves_older_items_unmarked_and_marks_new_ones(scratch_dsn: str) -> None:
    """Migration 025 does not rewrite the table: an item from before has no transaction
    (it is never caught up); those written after, by INSERT or COPY, have theirs."""
    before, after = split_at("notifier", MIGRATIONS, "025_inbox_written_xid")
    conn = await asyncpg.connect(scratch_dsn)
    try:
        await apply_migrations(conn, before)
        insert = "INSERT INTO inbox_items (user_id, notice_id) VALUES ($1, $2)"
        await conn.execute(insert, uuid.uuid4(), uuid.uuid4())
        table = await conn.fetchval("SELECT pg_relation_filenode('inbox_items')")
        await apply_migrations(conn, after)
        assert await conn.fetchval("SELECT pg_relation_filenode('inbox_items')") == table
        async with conn.transaction():
            xid = await conn.fetchval("SELECT pg_current_xact_id()::text")
            await conn.execute(insert, uuid.uuid4(), uuid.uuid4())
            await conn.copy_records_to_table(
                "inbox_items", records=[(uuid.uuid4(), uuid.uuid4(), False)],
                columns=("user_id", "notice_id", "pinned"),
            )  # fmt: skip
        written = await conn.fetch("SELECT written_xid::text FROM inbox_items ORDER BY id")
        assert [r[0] for r in written] == [None, xid, xid]
    finally:
        await conn.close()


class _LookupFailsOnce:
    """The hub's pool, whose next connection, once armed, is refused (a pool timeout,
    a database blip): one live lookup fails."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self.armed = False

    def acquire(self) -> Any:
        if self.armed:
            self.armed = False
            raise TimeoutError("no connection in time")
        return self._pool.acquire()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


async def _written_xid(pool: asyncpg.Pool, uid: uuid.UUID, subject: str) -> int:
    written = await pool.fetchval(
        "SELECT i.written_xid::text FROM inbox_items i JOIN notices n USING (notice_id)"
        " WHERE i.user_id = $1 AND n.params->>'subject' = $2",
        uid,
        subject,
    )
    assert written is not None
    return int(written)  # an xid8's text is its number


async def test_an_item_whose_live_lookup_failed_is_caught_up_without_a_loss(
    pool: asyncpg.Pool, scratch_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A notification heard while its lookup fails is not forgotten by the next fence:
    the horizon stays below its transaction, and the hub catches it up by itself (the
    listener is never lost)."""
    monkeypatch.setattr(stream, "FENCE_SECONDS", 0.1)
    flaky = _LookupFailsOnce(pool)
    hub = InboxHub(cast(asyncpg.Pool, flaky), scratch_dsn, Renderer())
    await hub.start()
    uid = uuid.uuid4()
    queue = await hub.subscribe(uid)  # the hub's own queue: what it pushes
    try:
        await _announce(pool, uid, "heard")
        assert (await asyncio.wait_for(queue.get(), 10))["title"] == "heard"
        heard = await _written_xid(pool, uid, "heard")

        async def past_heard() -> bool:  # a fence came back: "heard" is not read again
            return int(hub._horizon or 0) > heard

        await until(past_heard, seconds=10)
        flaky.armed = True
        await _announce(pool, uid, "lookup failed")
        written = await _written_xid(pool, uid, "lookup failed")
        deadline = time.monotonic() + 10
        while queue.empty():  # fences keep coming back meanwhile (every 0.1 s)
            assert int(hub._horizon or 0) <= written, "the horizon passed an item not pushed"
            assert time.monotonic() < deadline, "the item whose lookup failed never came"
            await asyncio.sleep(0.01)
        assert not flaky.armed  # its lookup did fail
        assert (await queue.get())["title"] == "lookup failed"
        assert hub._listener.resumed == 0  # no loss: the hub caught up by itself

        await _announce(pool, uid, "after")
        assert (await asyncio.wait_for(queue.get(), 10))["title"] == "after"
    finally:
        hub.unsubscribe(uid, queue)
        await hub.close()


async def test_a_stream_never_started_ends_its_subscription(
    pool: asyncpg.Pool, scratch_dsn: str
) -> None:
    """The client went away before the response began: the stream's own ``finally``
    never runs, and its queue would be filled for as long as the process lives."""
    hub = InboxHub(pool, scratch_dsn, Renderer())
    uid = uuid.uuid4()
    events = hub.stream(uid, await hub.subscribe(uid), [], session_open)
    assert uid in hub._subscribers
    del events
    gc.collect()
    assert uid not in hub._subscribers


class _KnowsNotAll(Renderer):
    """A process of an older release: a notice's template is one it does not know."""

    def inbox(self, template: str, params: Mapping[str, str]) -> tuple[str, str]:
        if params.get("subject") == "newer template":
            raise KeyError(template)
        return super().inbox(template, params)


async def test_an_item_this_process_cannot_render_holds_up_nothing_after_it(
    pool: asyncpg.Pool, scratch_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An item that cannot be rendered is not a failed lookup: read again it fails again.
    Taken for one, every catch-up would stop at it and no fence would move the horizon
    again. It is skipped (the page's next load shows it); the horizon moves past it."""
    monkeypatch.setattr(stream, "FENCE_SECONDS", 0.1)
    hub = InboxHub(pool, scratch_dsn, _KnowsNotAll())
    await hub.start()
    uid = uuid.uuid4()
    queue = await hub.subscribe(uid)
    try:
        await _announce(pool, uid, "newer template")
        await _announce(pool, uid, "after")
        assert (await asyncio.wait_for(queue.get(), 10))["title"] == "after"
        unrendered = await _written_xid(pool, uid, "newer template")

        async def past_it() -> bool:
            return int(hub._horizon or 0) > unrendered

        await until(past_it, seconds=10)
        assert not hub._owed
    finally:
        hub.unsubscribe(uid, queue)
        await hub.close()


async def test_a_held_back_horizon_does_not_push_again_what_was_there_before_a_stream(
    pool: asyncpg.Pool, scratch_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction left open anywhere (idle in transaction, a long report) holds every
    snapshot's xmin, so the horizon, back: the catch-up after a loss does not push again
    the items written before a stream opened (its initial read saw them), however old;
    an item committed while deaf still is."""
    monkeypatch.setattr(stream, "FENCE_SECONDS", 0.1)
    holder = await asyncpg.connect(scratch_dsn)
    hub = InboxHub(pool, scratch_dsn, Renderer())
    try:
        held = holder.transaction()
        await held.start()
        oldest = int(await holder.fetchval("SELECT pg_current_xact_id()::text"))
        await hub.start()
        uid = uuid.uuid4()
        await _announce(pool, uid, "before the stream")
        assert await _written_xid(pool, uid, "before the stream") > oldest
        queue = await hub.subscribe(uid)  # the hub's own queue: what it pushes
        await asyncio.sleep(0.5)  # fences come back, the horizon cannot pass the holder
        assert int(hub._horizon or 0) <= oldest
        # Its NOTIFY may be heard only once the queue is there (a busy machine): pushed
        # live then, as to any stream open when a notice is heard. Not what is tested.
        while not queue.empty():
            assert queue.get_nowait()["title"] == "before the stream"

        async with listener_deaf(pool, monkeypatch):
            await _announce(pool, uid, "while deaf")
        assert (await asyncio.wait_for(queue.get(), 10))["title"] == "while deaf"
        await asyncio.sleep(0.3)  # anything else the catch-up would push
        assert queue.empty()
        assert int(hub._horizon or 0) <= oldest  # still held back
    finally:
        await hub.close()
        await holder.close()


async def test_a_stream_open_long_under_a_held_horizon_is_pushed_nothing_twice(
    pool: asyncpg.Pool, scratch_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a transaction left open holds the horizon back, every catch-up reads again
    all that was pushed to a stream since: more items than a stream could remember by
    count (it remembered its last 256). The hub remembers what it pushed to each stream
    by transaction, and forgets it once a fence moves the horizon past it."""
    monkeypatch.setattr(stream, "FENCE_SECONDS", 0.1)
    holder = await asyncpg.connect(scratch_dsn)
    hub = InboxHub(pool, scratch_dsn, Renderer())
    events: AsyncGenerator[str, None] | None = None
    try:
        held = holder.transaction()
        await held.start()
        await holder.fetchval("SELECT pg_current_xact_id()")  # an xid: the horizon holds
        await hub.start()
        uid = uuid.uuid4()
        queue = await hub.subscribe(uid)
        events = hub.stream(uid, queue, [], session_open)
        assert (await next_event(events))["event"] == "ready"
        for n in range(300):
            await _announce(pool, uid, f"live {n}")
            assert (await next_event(events))["title"] == f"live {n}"

        async with listener_deaf(pool, monkeypatch):
            await _announce(pool, uid, "while deaf")
        # The catch-up read all 300 again (by id, first): none is shown a second time.
        assert (await next_event(events))["title"] == "while deaf"
        remembered = hub._subscribers[uid][queue].pushed
        assert len(remembered) == 301

        await held.rollback()  # the horizon moves up at the next fence: all forgotten

        async def forgotten() -> bool:
            return not hub._subscribers[uid][queue].pushed

        await until(forgotten, seconds=10)
        await _announce(pool, uid, "after")
        assert (await next_event(events))["title"] == "after"
    finally:
        if events is not None:
            await events.aclose()
        await hub.close()
        await holder.close()
