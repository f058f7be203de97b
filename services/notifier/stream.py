"""Live inbox: server-sent events for users connected to this API process.

A fan-out commits its inbox rows and ``NOTIFY notifier_inbox, '<notice id>'``; each API
process listens once, looks up that notice's items for the users connected to it (one
indexed query, whatever the audience size) and pushes them to their streams. An item
written for one user after its notice's fan-out (a card that came late for it) is
notified as ``'<notice id> <user id>'``: only that user's item is pushed, not again the
items of everyone the notice reached before. If the listening connection is lost
(PostgreSQL restarted), it listens again and pushes what was written while it could not
hear: the items of the notices fanned out meanwhile, and those given meanwhile to late
cards for older notices.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import defaultdict, deque
from collections.abc import AsyncGenerator, Awaitable, Callable
from typing import Any
from uuid import UUID

import asyncpg

from services.notifier import late_contacts
from services.notifier.domain.templates import Renderer
from services.notifier.store import INBOX_CHANNEL, LATE_CARD_CATEGORIES
from shared.db.listener import Listener

log = logging.getLogger(__name__)

KEEPALIVE_SECONDS = 15.0
CATCH_UP_MARGIN_SECONDS = 5.0
SENT_REMEMBERED = 256
ITEM_COLUMNS = """
    i.id, i.notice_id, i.pinned, i.created_at, i.read_at, i.acknowledged_at,
    n.template, n.category, n.params
"""


# What a lost listener missed, found by times set near each commit (clock_timestamp()):
# the notices fanned out meanwhile, all their items (a fan-out writes its items at its
# start, maybe long before it ends); and, of the older notices a late card may be given
# (late_contacts._MISSED; few, by their index), the items written meanwhile. The two
# parts split notices by fan-out time: no item is in both.
_MISSED_WHILE_DEAF = f"""
SELECT i.user_id, {ITEM_COLUMNS} FROM notices n
JOIN inbox_items i ON i.notice_id = n.notice_id
WHERE i.user_id = ANY($1::uuid[]) AND n.fanned_out_at >= now() - make_interval(secs => $2)
UNION ALL
SELECT i.user_id, {ITEM_COLUMNS} FROM notices n
JOIN inbox_items i ON i.notice_id = n.notice_id
WHERE i.user_id = ANY($1::uuid[]) AND n.audience = 'all' AND n.status = 'fanned_out'
  AND n.recipient = 'user' AND n.category = ANY($3::text[])
  AND n.fanned_out_at > now() - $4::interval
  AND n.fanned_out_at < now() - make_interval(secs => $2)
  AND i.created_at >= now() - make_interval(secs => $2)
ORDER BY id
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


class InboxHub:
    def __init__(self, pool: asyncpg.Pool, dsn: str, renderer: Renderer) -> None:
        self._pool = pool
        self._renderer = renderer
        self._subscribers: dict[UUID, set[asyncio.Queue[dict[str, Any]]]] = defaultdict(set)
        self._listener = Listener(dsn, INBOX_CHANNEL, self._on_notify, self._catch_up)
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        await self._listener.start()

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self._listener.close()

    def _on_notify(self, payload: str) -> None:
        notice, _, user = payload.partition(" ")
        only = UUID(user) if user else None
        if not self._subscribers or (only is not None and only not in self._subscribers):
            return
        task = asyncio.get_running_loop().create_task(self._dispatch(UUID(notice), only))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _dispatch(self, notice_id: UUID, only: UUID | None) -> None:
        await self._push(
            f"SELECT i.user_id, {ITEM_COLUMNS} FROM inbox_items i"  # noqa: S608
            " JOIN notices n ON n.notice_id = i.notice_id"
            " WHERE i.user_id = ANY($1::uuid[]) AND i.notice_id = $2"
            " AND ($3::uuid IS NULL OR i.user_id = $3)",
            notice_id,
            only,
        )

    async def _catch_up(self, deaf_seconds: float) -> None:
        """After the listener was lost: the items written meanwhile (:data:`_MISSED_WHILE_DEAF`).

        Its margin covers an item that committed just before the loss, unheard; an item
        pushed twice is dropped by the stream (see :meth:`stream`). A failure is raised:
        the listener tries again.
        """
        await self._push(
            _MISSED_WHILE_DEAF,
            deaf_seconds + CATCH_UP_MARGIN_SECONDS,
            list(LATE_CARD_CATEGORIES),
            late_contacts.WINDOW,
            retry=True,
        )

    async def _push(self, query: str, *args: object, retry: bool = False) -> None:
        users = list(self._subscribers)
        if not users:
            return
        try:
            async with self._pool.acquire() as conn:
                rows = await conn.fetch(query, users, *args)
        except Exception:
            if retry:
                raise
            log.exception("live inbox: lookup failed")
            return
        for row in rows:
            item = item_json(row, self._renderer)
            for queue in self._subscribers.get(row["user_id"], ()):
                queue.put_nowait(item)

    def subscribe(self, user_id: UUID) -> asyncio.Queue[dict[str, Any]]:
        """A queue of the user's new items, filled from now on (see :meth:`stream`)."""
        queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._subscribers[user_id].add(queue)
        return queue

    def unsubscribe(self, user_id: UUID, queue: asyncio.Queue[dict[str, Any]]) -> None:
        subscribers = self._subscribers.get(user_id)
        if subscribers is not None:
            subscribers.discard(queue)
            if not subscribers:
                del self._subscribers[user_id]

    async def stream(
        self,
        user_id: UUID,
        queue: asyncio.Queue[dict[str, Any]],
        initial: list[dict[str, Any]],
        still_open: Callable[[], Awaitable[bool]],
    ) -> AsyncGenerator[str, None]:
        """The event stream of one connection: pending pinned items, ready, then live,
        for as long as ``still_open`` says the caller's session is (checked at every
        item and keep-alive: a logout, a password change or the token's expiry ends it)."""
        sent: deque[int] = deque(maxlen=SENT_REMEMBERED)  # a catch-up may repeat an item
        try:
            for item in initial:
                sent.append(item["id"])
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
                if item["id"] in sent:
                    continue
                if not await still_open():
                    return
                sent.append(item["id"])
                yield _event("notice", item)
        finally:
            self.unsubscribe(user_id, queue)


def _event(name: str, data: dict[str, Any]) -> str:
    item_id = data.get("id")
    prefix = f"id: {item_id}\n" if item_id is not None else ""
    return f"{prefix}event: {name}\ndata: {json.dumps(data)}\n\n"
