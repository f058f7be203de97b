"""Live inbox: server-sent events for users connected to this API process.

A fan-out commits its inbox rows and ``NOTIFY notifier_inbox, '<notice id>'``; each API
process listens once, looks up that notice's items for the users connected to it (one
indexed query, whatever the audience size) and pushes them to their streams. An item
written for one user after its notice's fan-out (a card that came late for it) is
notified as ``'<notice id> <user id>'``: only that user's item is pushed, not again the
items of everyone the notice reached before. If the listening connection is lost
(PostgreSQL restarted, or a connection that died without a word), it listens again and
pushes what it may not have heard, found by transaction ids, not clocks: each item
records the transaction that wrote it (``inbox_items.written_xid``), and the hub keeps a
*horizon*, an xid below which every transaction had ended when the hub last knew it had
heard everything: their items were pushed. After a loss it pushes the items of its users
written by transactions at or above it, however long those stayed open before they
committed (a batch of cards, a fan-out to 100,000 users).

The horizon is the ``xmin`` of a snapshot (the oldest transaction still running then):

* taken before the first LISTEN: nothing before the hub started is its to push;
* moved up by a *fence*: every ``FENCE_SECONDS`` the hub takes a snapshot's ``xmin``
  and, in the same statement, notifies its own channel. A transaction that had ended
  before that snapshot queued its NOTIFY before the fence's, and PostgreSQL delivers a
  listener's notifications in queue order: when the fence comes back (and the lookups
  of the notifications heard before it succeeded), everything below its ``xmin`` was
  heard. A fence not heard (the connection died without a word) moves nothing; nor does
  one sent before a loss that the hub has not caught up on yet;
* after a loss, set by the catch-up itself to the ``xmin`` of a snapshot taken before
  its lookup (which, later still, saw every transaction that had ended before it).

A notification heard whose lookup failed (a pool timeout, a blip) was heard but not
pushed: the hub then *owes* a catch-up. No fence moves the horizon while one is owed;
the next turn of the fence loop runs it (the same lookup as after a loss, one catch-up
at a time), and a failure there is owed again.

The horizon is cluster-wide: a transaction left open anywhere (idle in transaction, a
long report) holds it back, for hours perhaps. So each subscription keeps a *floor*, the
snapshot taken before its stream's initial read: an item visible in it had committed
before that read, and the catch-up does not push it to that stream again, however far
back the horizon is (only what was written while the stream was open, at most).

Nothing reaches a stream twice. A catch-up reads again items that were pushed (live,
or by an earlier catch-up), as far back as the horizon: each subscription remembers the
items pushed to it with their transactions, and a fence forgets those below the
``xmin`` it moved the horizon to. Their notifications were all heard, and their lookups
done, before the fence came back; no catch-up reads below the horizon: none of them can
come again. So the memory holds what a catch-up could read again, however long a held
horizon makes that. (Not forgotten at a catch-up's own move: a notification heard just
before it may still be looking its items up.)

A fence is notified as ``'<nil UUID> <fence id>'``: every API process hears every
fence and keeps only its own (a process that does not know fences ignores it too, as
a late-card notification for a user not connected to it).
"""

from __future__ import annotations

import asyncio
import json
import logging
import weakref
from collections import defaultdict
from collections.abc import AsyncGenerator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from uuid import UUID, uuid4

import asyncpg

from services.notifier.domain.templates import Renderer
from services.notifier.store import INBOX_CHANNEL
from shared.db.listener import Listener

log = logging.getLogger(__name__)

_T = TypeVar("_T")

KEEPALIVE_SECONDS = 15.0
FENCE_SECONDS = 15.0  # how often the horizon moves up (and how long a fence is waited for)
FENCE = str(UUID(int=0))  # a notification naming this notice is a hub's fence
ITEM_COLUMNS = """
    i.id, i.notice_id, i.pinned, i.created_at, i.read_at, i.acknowledged_at,
    n.template, n.category, n.params, i.written_xid::text AS written_xid
"""
Queue = asyncio.Queue[dict[str, Any]]

# The oldest transaction (with an id) still running, or the next to come if none: every
# transaction below it has ended. As text: asyncpg has no codec for xid8.
_XMIN = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text"

# The snapshot is the statement's, taken before it runs; the NOTIFY is queued at its
# commit, after every NOTIFY of the transactions that had ended before the snapshot.
_FENCE = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text, pg_notify($1, $2)"

# A subscription's floor: the whole snapshot (its xmin alone is held back as the
# horizon is), as text: asyncpg has no codec for pg_snapshot either.
_SNAPSHOT = "SELECT pg_current_snapshot()::text"

# What a lost listener may have missed, per subscription ($1, $2: each open stream's user
# and floor; ``n`` names the stream): the items written by the transactions at or above
# the horizon ($3; migration 026 indexes written_xid) that its floor did not see. Both a
# fan-out's items and those a late card was given (late_contacts.py) record their
# transaction; items from before migration 025 have none and are never caught up.
_MISSED_SINCE = f"""
SELECT s.n, {ITEM_COLUMNS}
FROM unnest($1::uuid[], $2::text[]) WITH ORDINALITY AS s(user_id, floor, n)
JOIN inbox_items i ON i.user_id = s.user_id
JOIN notices n ON n.notice_id = i.notice_id
WHERE i.written_xid >= $3::text::xid8
AND NOT pg_visible_in_snapshot(i.written_xid, s.floor::pg_snapshot)
ORDER BY i.id
"""  # noqa: S608 - constant columns


def item_json(row: Any, renderer: Renderer) -> dict[str, Any]:
    title, body = renderer.inbox(row["template"], row["params"])
    return {
        "id": row["id"],
        "notice_id": str(row["notice_id"]),
        "category": row["category"],
        "title": title,
        "body": body,
        "pinned": row["pinned"],
        "created_at": row["created_at"].isoformat(),
        "read_at": row["read_at"].isoformat() if row["read_at"] else None,
        "acknowledged_at": row["acknowledged_at"].isoformat() if row["acknowledged_at"] else None,
    }


@dataclass
class _Subscription:
    """An open stream's floor (a snapshot, as text), and the items pushed to it that a
    catch-up could read again: id -> the transaction that wrote it (an xid8's number)."""

    floor: str
    pushed: dict[int, int] = field(default_factory=dict)

    def offer(self, queue: Queue, item: dict[str, Any], written: str | None) -> None:
        if item["id"] in self.pushed:
            return
        if written is not None:  # an item from before migration 025 is never caught up
            self.pushed[item["id"]] = int(written)
        queue.put_nowait(item)

    def forget_below(self, xmin: int) -> None:
        self.pushed = {i: x for i, x in self.pushed.items() if x >= xmin}


class InboxHub:
    def __init__(self, pool: asyncpg.Pool, dsn: str, renderer: Renderer) -> None:
        self._pool = pool
        self._renderer = renderer
        # Each user's open streams' queues, with each one's floor and pushed items.
        self._subscribers: dict[UUID, dict[Queue, _Subscription]] = defaultdict(dict)
        self._listener = Listener(dsn, INBOX_CHANNEL, self._on_notify, self._catch_up)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._dispatches: set[asyncio.Task[bool]] = set()
        # Every transaction below the horizon (an xid8, as text) has ended, and its items
        # were pushed or were not this hub's to push (see the module's docstring).
        self._horizon: str | None = None
        self._caught_up = 0  # the listener's resumptions the hub caught up on
        self._owed = False  # a lookup failed: a catch-up is due (see _dispatched)
        self._catching_up = asyncio.Lock()  # one catch-up at a time
        self._fences: dict[str, asyncio.Future[list[asyncio.Task[bool]]]] = {}

    async def start(self) -> None:
        self._horizon = await self._pool.fetchval(_XMIN)  # before listening: no later
        await self._listener.start()
        self._spawn(self._keep_fencing())

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._listener.close()

    def _spawn(self, work: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _on_notify(self, payload: str) -> None:
        notice, _, user = payload.partition(" ")
        if notice == FENCE:
            heard = self._fences.get(user)  # another process's fence: not this one's
            if heard is not None and not heard.done():
                heard.set_result(list(self._dispatches))  # the lookups heard before it
            return
        only = UUID(user) if user else None
        if not self._subscribers or (only is not None and only not in self._subscribers):
            return
        task = self._spawn(self._dispatch(UUID(notice), only))
        self._dispatches.add(task)
        task.add_done_callback(self._dispatched)

    def _dispatched(self, task: asyncio.Task[bool]) -> None:
        """A lookup that did not push what it found owes a catch-up: its notification is
        gone, and a fence heard later would otherwise take it for heard. (Left in
        ``_dispatches`` until now: a fence heard before this sees its result.)"""
        self._dispatches.discard(task)
        if task.cancelled():
            self._owed = True
        elif (error := task.exception()) is not None:
            log.error("live inbox: push failed", exc_info=error)
            self._owed = True
        elif not task.result():
            self._owed = True

    async def _dispatch(self, notice_id: UUID, only: UUID | None) -> bool:
        return await self._push(
            f"SELECT i.user_id, {ITEM_COLUMNS} FROM inbox_items i"  # noqa: S608
            " JOIN notices n ON n.notice_id = i.notice_id"
            " WHERE i.user_id = ANY($1::uuid[]) AND i.notice_id = $2"
            " AND ($3::uuid IS NULL OR i.user_id = $3)",
            notice_id,
            only,
        )

    async def _keep_fencing(self) -> None:
        while True:
            await asyncio.sleep(FENCE_SECONDS)
            owed = self._owed
            try:
                await (self._catch_up_from_horizon(None) if owed else self._fence())
            except Exception:
                what = "catch-up after a failed lookup" if owed else "fence"
                log.warning("live inbox: %s failed", what, exc_info=True)

    async def _fence(self) -> None:
        """Move the horizon up to a snapshot's ``xmin`` once the listener proves it heard
        every transaction that had ended before that snapshot (its fence came back).

        Not while a catch-up is due: a fence sent before the loss, heard after it (a new
        LISTEN may read notifications queued just before it), would prove nothing about
        what the lost connection did not hear; the catch-up moves the horizon itself. Nor
        while one is owed (a lookup failed): that one does too."""
        resumed = self._listener.resumed
        if not self._listener.listening or self._caught_up != resumed or self._owed:
            return
        fence = str(uuid4())
        heard = self._fences[fence] = asyncio.get_running_loop().create_future()
        try:
            xmin = await self._pool.fetchval(_FENCE, INBOX_CHANNEL, f"{FENCE} {fence}")
            async with asyncio.timeout(FENCE_SECONDS):
                dispatched = await heard
        except TimeoutError:
            log.warning("live inbox: fence not heard in %s s", FENCE_SECONDS)
            return
        finally:
            del self._fences[fence]
        # A notification heard but not pushed (its lookup failed) is not heard: its
        # transaction stays above the horizon, and the catch-up it owes pushes it (one
        # that failed before this fence came back left _dispatches then: _owed says so).
        pushed = await asyncio.gather(*dispatched, return_exceptions=True)
        if (
            all(p is True for p in pushed)
            and not self._owed
            and self._listener.resumed == self._caught_up == resumed
        ):
            self._horizon = xmin
            for subscribed in self._subscribers.values():
                for subscription in subscribed.values():
                    subscription.forget_below(int(xmin))

    async def _catch_up(self, _deaf_seconds: float) -> None:
        """After the listener was lost: the items of transactions at or above the horizon
        (:data:`_MISSED_SINCE`), then the horizon moved up to before that lookup.

        Some were heard (and pushed) already: each subscription remembers those (see
        :class:`_Subscription`). A failure is raised: the listener tries again.
        """
        resumed = self._listener.resumed  # the LISTEN is back: what ends from now is heard
        await self._catch_up_from_horizon(resumed)

    async def _catch_up_from_horizon(self, resumed: int | None) -> None:
        async with self._catching_up:  # the next one reads from the horizon this one set
            assert self._horizon is not None  # taken by start(), before the first LISTEN
            # Cleared before the snapshot: a lookup failing after it may not have been
            # seen by this catch-up, and is owed again.
            self._owed = False
            try:
                horizon = await self._pool.fetchval(_XMIN)  # before the lookup: sees all below
                await self._push_missed(self._horizon)
            except BaseException:
                self._owed = True
                raise
            self._horizon = horizon
            if resumed is not None:
                self._caught_up = resumed

    async def _push_missed(self, horizon: str) -> None:
        """Push :data:`_MISSED_SINCE` to each open stream: what its floor did not see."""
        users: list[UUID] = []
        open_streams: list[tuple[Queue, _Subscription]] = []
        for user_id, subscribed in self._subscribers.items():
            for queue, subscription in subscribed.items():
                users.append(user_id)
                open_streams.append((queue, subscription))
        if not open_streams:
            return
        floors = [subscription.floor for _, subscription in open_streams]
        async with self._pool.acquire() as conn:
            rows = await conn.fetch(_MISSED_SINCE, users, floors, horizon)
        for row in rows:
            item = self._rendered(row)
            if item is not None:
                queue, subscription = open_streams[row["n"] - 1]
                subscription.offer(queue, item, row["written_xid"])

    async def _push(self, query: str, *args: object) -> bool:
        """Push the rows found to their users' queues; False if the lookup failed."""
        users = list(self._subscribers)
        if not users:
            return True
        try:
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(query, users, *args)
        except Exception:
            log.exception("live inbox: lookup failed")
            return False
        for row in rows:
            item = self._rendered(row)
            if item is None:
                continue
            for queue, subscription in self._subscribers.get(row["user_id"], {}).items():
                subscription.offer(queue, item, row["written_xid"])
        return True

    def _rendered(self, row: asyncpg.Record) -> dict[str, Any] | None:
        """The row as a stream item, or None (logged) if it cannot be rendered: a template
        this process does not know yet (a newer release's, mid-deploy). Not a failed
        lookup: read again, it would fail again, and each catch-up after it would stop
        there, the horizon held forever. The page's next load shows it."""
        try:
            return item_json(row, self._renderer)
        except Exception:
            log.exception("live inbox: item %s not rendered, not pushed", row["id"])
            return None

    async def subscribe(self, user_id: UUID) -> Queue:
        """A queue of the user's new items, filled from now on (see :meth:`stream`).

        Call it before the stream's initial read: its floor, a snapshot taken first, saw
        nothing that read will not (see the module's docstring)."""
        floor = await self._pool.fetchval(_SNAPSHOT)
        queue: Queue = asyncio.Queue()
        self._subscribers[user_id][queue] = _Subscription(floor)
        return queue

    def unsubscribe(self, user_id: UUID, queue: Queue) -> None:
        subscribers = self._subscribers.get(user_id)
        if subscribers is not None:
            subscribers.pop(queue, None)
            if not subscribers:
                del self._subscribers[user_id]

    def stream(
        self,
        user_id: UUID,
        queue: Queue,
        initial: list[dict[str, Any]],
        still_open: Callable[[], Awaitable[bool]],
    ) -> AsyncGenerator[str, None]:
        """The event stream of one connection: pending pinned items, ready, then live,
        for as long as ``still_open`` says the caller's session is (checked at every
        item and keep-alive: a logout, a password change or the token's expiry ends it).

        It ends the subscription when it ends, or, never started (the client gone before
        the response began: its ``finally`` never runs), when it is collected: a queue
        left subscribed would be filled for good."""
        events = self._events(user_id, queue, initial, still_open)
        weakref.finalize(events, self.unsubscribe, user_id, queue)
        return events

    async def _events(
        self,
        user_id: UUID,
        queue: Queue,
        initial: list[dict[str, Any]],
        still_open: Callable[[], Awaitable[bool]],
    ) -> AsyncGenerator[str, None]:
        # Pushed too if a lookup reads it (written after the floor, or notified late);
        # the hub remembers only what it pushed.
        shown = {item["id"] for item in initial}
        try:
            for item in initial:
                yield _event("notice", item)
            yield _event("ready", {})
            while True:
                try:
                    async with asyncio.timeout(KEEPALIVE_SECONDS):
                        item = await queue.get()
                except TimeoutError:
                    if not await still_open():
                        return
                    yield ": keep-alive\n\n"
                    continue
                if item["id"] in shown:
                    continue
                if not await still_open():
                    return
                yield _event("notice", item)
        finally:
            self.unsubscribe(user_id, queue)


def _event(name: str, data: dict[str, Any]) -> str:
    item_id = data.get("id")
    prefix = f"id: {item_id}\n" if item_id is not None else ""
    return f"{prefix}event: {name}\ndata: {json.dumps(data)}\n\n"
