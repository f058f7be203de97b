"""Users' in-site inbox: list, unread count, mark read, acknowledge pinned, live stream."""

from __future__ import annotations

import time
from functools import partial
from typing import Annotated, Any
from uuid import UUID

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import Field

from services.notifier import stream_tickets
from services.notifier.routes.deps import (
    BIGINT_MAX,
    HubDep,
    RendererDep,
    RuntimeDep,
    user_id,
)
from services.notifier.stream import ITEM_COLUMNS, KEEPALIVE_SECONDS, item_json
from shared.auth import Claims, CurrentUser
from shared.auth.dependencies import current_user
from shared.events.catalogue.notifier import NoticeCategory
from shared.observability import Problem
from shared.service import Runtime
from shared.service.answers import Answer, Timestamp

ItemId = Annotated[int, Path(ge=1, le=BIGINT_MAX)]
router = APIRouter(prefix="/inbox", tags=["inbox"])


class InboxItem(Answer):
    """One notice in a user's inbox, in the user's language (``stream.item_json``)."""

    id: int
    notice_id: UUID
    category: NoticeCategory
    title: str
    body: str
    pinned: bool = Field(description="Shown first until acknowledged (a security notice).")
    created_at: Timestamp
    read_at: Timestamp | None
    acknowledged_at: Timestamp | None


class InboxPage(Answer):
    pinned: list[InboxItem] = Field(description="Pinned items not acknowledged yet, all.")
    items: list[InboxItem] = Field(description="Every item, newest first, a page of them.")
    next_before: int | None = Field(
        description="Pass as ``before`` for the next page; null on the last one."
    )


class UnreadCount(Answer):
    unread: int
    pinned: int = Field(description="Pinned items not acknowledged yet.")


class ItemMarked(Answer):
    id: int
    read_at: Timestamp
    acknowledged_at: Timestamp | None


class StreamTicket(Answer):
    ticket: str
    expires_in: int = Field(description="Seconds the ticket can still be used (once).")


class PolicyNotice(Answer):
    """A privacy-policy version the user was told of, and when they saw it."""

    policy_version: str
    notified_at: Timestamp
    emailed_at: Timestamp | None
    seen_at: Timestamp | None = Field(description="When the user first read its notice.")


def _event(name: str, data: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "properties": {
            "event": {"const": name},
            "data": {"type": "string", "contentMediaType": "application/json",
                     "contentSchema": data},
            **more,
        },
    }  # fmt: skip


STREAM_EVENT = {
    "type": "object",
    "required": ["event", "data"],
    "oneOf": [
        _event(
            "notice", {"$ref": "#/components/schemas/InboxItem"},
            id={"type": "string", "description": "The item's id."},
        ),
        _event("ready", {"type": "object", "maxProperties": 0}),
    ],
}  # fmt: skip
STREAM_ANSWER: dict[int | str, dict[str, Any]] = {
    200: {
        "description": (
            "Server-sent events: a `notice` event (its `id` the item's, its data an"
            " InboxItem as JSON) per pinned item not acknowledged yet, then `ready`, then"
            " a `notice` per new item as it arrives; a comment every"
            f" {KEEPALIVE_SECONDS:g} s keeps the connection open. It ends when the"
            " session does (logout, password change, the token's expiry)."
        ),
        # Each event, as OpenAPI 3.1 tools read an event stream's schema (3.2 would
        # call it itemSchema): its data is JSON.
        "content": {"text/event-stream": {"schema": STREAM_EVENT}},
    }
}

_PINNED = f"""
SELECT {ITEM_COLUMNS} FROM inbox_items i JOIN notices n ON n.notice_id = i.notice_id
WHERE i.user_id = $1 AND i.pinned AND i.acknowledged_at IS NULL
ORDER BY i.id DESC
"""  # noqa: S608 - constant columns


@router.get("", response_model=InboxPage)
async def list_inbox(
    user: CurrentUser,
    runtime: RuntimeDep,
    renderer: RendererDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[int | None, Query(ge=1, le=BIGINT_MAX)] = None,
) -> dict[str, Any]:
    """Pinned notices not yet acknowledged (always first), then every item, newest first."""
    uid = user_id(user)
    async with runtime.pool.acquire() as conn:
        pinned = await conn.fetch(_PINNED, uid)
        rows = await conn.fetch(
            f"SELECT {ITEM_COLUMNS} FROM inbox_items i"  # noqa: S608 - constant columns
            " JOIN notices n ON n.notice_id = i.notice_id"
            " WHERE i.user_id = $1 AND ($2::bigint IS NULL OR i.id < $2)"
            " ORDER BY i.id DESC LIMIT $3",
            uid,
            before,
            limit,
        )
    items = [item_json(r, renderer) for r in rows]
    return {
        "pinned": [item_json(r, renderer) for r in pinned],
        "items": items,
        "next_before": items[-1]["id"] if len(items) == limit else None,
    }


@router.get("/unread-count", response_model=UnreadCount)
async def unread_count(user: CurrentUser, runtime: RuntimeDep) -> dict[str, int]:
    async with runtime.pool.acquire() as conn:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE read_at IS NULL) AS unread,"
            " count(*) FILTER (WHERE pinned AND acknowledged_at IS NULL) AS pinned"
            " FROM inbox_items WHERE user_id = $1",
            user_id(user),
        )
    assert row is not None
    return {"unread": row["unread"], "pinned": row["pinned"]}


async def _mark(runtime: Any, uid: UUID, item_id: int, *, acknowledge: bool) -> dict[str, Any]:
    async with runtime.pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            "UPDATE inbox_items SET read_at = coalesce(read_at, now()),"
            " acknowledged_at = CASE WHEN $3 THEN coalesce(acknowledged_at, now())"
            " ELSE acknowledged_at END"
            " WHERE id = $1 AND user_id = $2 RETURNING notice_id, read_at, acknowledged_at",
            item_id,
            uid,
            acknowledge,
        )
        if row is None:
            raise Problem(404, "Not found", "No such inbox item.", slug="not-found")
        # Reading a policy-change notice is what "the version the user was shown" records.
        await conn.execute(
            "UPDATE policy_notices SET seen_at = coalesce(seen_at, now())"
            " WHERE user_id = $1 AND notice_id = $2",
            uid,
            row["notice_id"],
        )
    return {
        "id": item_id,
        "read_at": row["read_at"].isoformat(),
        "acknowledged_at": row["acknowledged_at"].isoformat() if row["acknowledged_at"] else None,
    }


@router.post("/{item_id}/read", response_model=ItemMarked)
async def mark_read(item_id: ItemId, user: CurrentUser, runtime: RuntimeDep) -> dict[str, Any]:
    return await _mark(runtime, user_id(user), item_id, acknowledge=False)


@router.post("/{item_id}/acknowledge", response_model=ItemMarked)
async def acknowledge(item_id: ItemId, user: CurrentUser, runtime: RuntimeDep) -> dict[str, Any]:
    """Pinned notices stay on top until acknowledged; the acknowledgement is recorded."""
    return await _mark(runtime, user_id(user), item_id, acknowledge=True)


@router.post("/stream-tickets", status_code=201, response_model=StreamTicket)
async def stream_ticket(user: CurrentUser, runtime: RuntimeDep) -> dict[str, Any]:
    """A ticket to open the stream with ``EventSource`` (which cannot send a token):
    ``GET /inbox/stream?ticket=...``. Single use, valid for ``expires_in`` seconds."""
    async with runtime.pool.acquire() as conn:
        user_id(user)  # a user's token only
        ticket = await stream_tickets.issue(conn, user)
    return {"ticket": ticket, "expires_in": stream_tickets.TICKET_SECONDS}


@router.get("/stream", response_class=StreamingResponse, responses=STREAM_ANSWER)
async def stream(
    request: Request,
    runtime: RuntimeDep,
    hub: HubDep,
    renderer: RendererDep,
    ticket: Annotated[str | None, Query(max_length=100)] = None,
) -> StreamingResponse:
    """Server-sent events: pending pinned notices, ``ready``, then each new item live.

    The caller is named by a bearer token or, from a browser's ``EventSource``, by a
    ticket from ``POST /inbox/stream-tickets``.
    """
    claims = await _stream_caller(request, runtime, ticket)
    uid = user_id(claims)
    # Subscribed before the pinned items are read: a fan-out committed in between is then
    # pushed live (the stream drops what it sent already), never missed; and the
    # subscription's floor is a snapshot taken before that read (see InboxHub.subscribe).
    queue = await hub.subscribe(uid)
    try:
        async with runtime.pool.acquire() as conn:
            pinned = [item_json(r, renderer) for r in await conn.fetch(_PINNED, uid)]
    except BaseException:
        hub.unsubscribe(uid, queue)
        raise

    return StreamingResponse(
        hub.stream(uid, queue, pinned, partial(session_still_open, request, claims)),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
    )


async def session_still_open(request: Request, claims: Claims) -> bool:
    """Whether the caller's token would still be accepted: unexpired, not revoked.

    While this replica's revocation list is behind (503), the stream ends like any new
    request would be refused: a session revoked meanwhile (a password changed to lock a
    thief out) must not keep receiving the inbox here. The page opens a new stream with
    a new ticket, refused until the list has caught up."""
    if time.time() >= claims.exp:
        return False
    check = getattr(request.app.state, "session_check", None)
    try:
        return check is None or bool(await check(request, claims))
    except Problem:
        return False


async def _stream_caller(request: Request, runtime: Runtime, ticket: str | None) -> Claims:
    if ticket is None:
        return await current_user(request)
    async with runtime.pool.acquire() as conn:
        claims = await stream_tickets.redeem(conn, ticket)
    check = getattr(request.app.state, "session_check", None)
    if claims is not None and check is not None and not await check(request, claims):
        claims = None  # bought by a session that has ended since
    if claims is None:
        raise Problem(
            401,
            "Unauthorised",
            "This stream ticket is unknown, expired or already used.",
            slug="unauthorised",
        )
    return claims


policy_router = APIRouter(tags=["inbox"])


@policy_router.get("/policy-notices", response_model=list[PolicyNotice])
async def my_policy_notices(user: CurrentUser, runtime: RuntimeDep) -> list[dict[str, Any]]:
    """The privacy-policy versions this user was notified of, and when they saw them."""
    async with runtime.pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT policy_version, notified_at, emailed_at, seen_at FROM policy_notices"
            " WHERE user_id = $1 ORDER BY notified_at",
            user_id(user),
        )
    return [
        {k: (v.isoformat() if hasattr(v, "isoformat") else v) for k, v in dict(r).items()}
        for r in rows
    ]
