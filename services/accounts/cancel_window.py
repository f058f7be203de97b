"""The cancel window of a whole-account deletion request, which accounts alone closes.

A user cancels here (the page, or the link in the confirmation email); the deletion
service alone knows when the grace period ends. So the deletion service announces the
end (stage ``holds``) and waits, and accounts decides: unless a cancel came first, the
request becomes ``confirmed`` (cancels refused from then on) and ``DeletionConfirmed``
lets the deletion service erase. Both paths lock the request's row, so a cancel and the
closing come one after the other: a cancel accounts took is never followed by an
erasure, and one it refused was answered 409, never "cancelled".
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal
from uuid import UUID

import asyncpg

from services.accounts import store
from services.accounts.context import Context, emit, notify
from services.accounts.links import new_action_token
from shared.db.pool import Connection
from shared.events.catalogue.accounts import DeletionCancelled, DeletionConfirmed
from shared.events.catalogue.deletion import DeletionStageChanged

#: An operator's deletion requests never approved by a second operator (P-15): awaiting
#: it, withdrawn, rejected or expired. The user was never told of them, and has none of
#: them to cancel (their export lists them all).
NEVER_APPROVED = ["pending_approval", "withdrawn", "rejected", "expired"]


async def notify_deletion_requested(
    ctx: Context, conn: Connection, user_id: UUID, request_id: UUID
) -> None:
    """Tell the user, by email and in-site, with the link that cancels (P-15): whoever
    started the deletion, the user or two operators. The link holds a one-time token, so
    it cancels without signing in (cancelling only keeps the account), and only this
    request: an earlier request's links die here."""
    await _spend_cancel_links(conn, user_id)
    lifetime = timedelta(days=ctx.settings.accounts_cancel_link_days)
    token = await new_action_token(
        ctx, conn, user_id, CANCEL_LINK, lifetime, deletion_request_id=request_id
    )
    by_email = {"token": token, "link": ctx.link(CANCEL_PAGE, token)}
    # In-site, where the user is signed in and cancels with their session: no token
    # (an inbox item is kept, exported and streamed; a live token has no place there).
    in_site = {"link": f"{ctx.settings.accounts_public_url}/#deletion={request_id}"}
    channels: tuple[tuple[Literal["email", "inbox"], dict[str, str]], ...] = (
        ("email", by_email),
        ("inbox", in_site),
    )
    for channel, params in channels:
        await notify(
            conn,
            template="deletion_requested",
            category="account_security",
            user_ids=(user_id,),
            params={"request_id": str(request_id), **params},
            channels=(channel,),
        )


CANCEL_LINK = "deletion_cancel"
CANCEL_PAGE = "cancel-deletion"


async def _spend_cancel_links(conn: Connection, user_id: UUID) -> None:
    await conn.execute(
        "UPDATE action_tokens SET used_at = now()"
        " WHERE user_id = $1 AND purpose = $2 AND used_at IS NULL",
        user_id,
        CANCEL_LINK,
    )


class AlreadyCancelled(Exception):
    """The link's request was cancelled (by this link, or by the user signed in), and no
    deletion is under way since: a retry of a cancel that went through."""


class NotCancellable(Exception):
    """The request is past its cancel window, or cancelled already."""

    def __init__(self, status: str) -> None:
        super().__init__(status)
        self.status = status


async def active_request(conn: Connection, user_id: UUID) -> asyncpg.Record | None:
    """The user's deletion under way (``requested`` or ``confirmed``), if any.

    The user's row is locked first, for the caller's transaction: a user's request and
    an operator's approval for the same user come one after the other, so an account
    never has two deletions under way (one of which the user could cancel, being told
    nothing is erased, while the other erased the account).
    """
    await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", user_id)
    return await conn.fetchrow(
        "SELECT * FROM deletion_requests WHERE user_id = $1"
        " AND status IN ('requested', 'confirmed') FOR UPDATE",
        user_id,
    )


async def cancel(conn: Connection, request_id: UUID, user_id: UUID) -> asyncpg.Record | None:
    """Cancel the user's request (in the caller's transaction); None if they have none
    such. Raises :class:`NotCancellable` once its window closed."""
    status = await conn.fetchval(
        "SELECT status FROM deletion_requests WHERE id = $1 AND user_id = $2"
        " AND status <> ALL($3::text[]) FOR UPDATE",
        request_id,
        user_id,
        NEVER_APPROVED,
    )
    if status is None:
        return None
    if status != "requested":
        raise NotCancellable(status)
    row = await conn.fetchrow(
        "UPDATE deletion_requests SET status = 'cancelled', updated_at = now()"
        " WHERE id = $1 RETURNING *",
        request_id,
    )
    await _spend_cancel_links(conn, user_id)
    await emit(conn, DeletionCancelled(user_id=user_id, request_id=request_id), user_id)
    return row


async def cancel_by_link(conn: Connection, token_hash: bytes) -> asyncpg.Record | None:
    """Cancel the request a mailed link was sent for (in the caller's transaction); None
    when the link is unknown, spent or expired. Raises :class:`NotCancellable` once the
    request's window closed (the link stays unspent: the transaction rolls back), and
    :class:`AlreadyCancelled` for a spent link whose request was cancelled, no other
    deletion being under way (a link a later request spent stays invalid: that
    request's email has the live one)."""
    owner = await store.action_token_owner(conn, token_hash, CANCEL_LINK)
    if owner is None:
        return None
    under_way = await active_request(conn, owner)  # the user's row, then the request's
    if await store.use_action_token(conn, token_hash, CANCEL_LINK) is None:
        used = await store.spent_action_token(conn, token_hash, CANCEL_LINK)
        if under_way is None and used is not None and used["deletion_request_id"] is not None:
            status = await conn.fetchval(
                "SELECT status FROM deletion_requests WHERE id = $1 AND user_id = $2",
                used["deletion_request_id"],
                owner,
            )
            if status == "cancelled":
                raise AlreadyCancelled
        return None
    if under_way is None:
        return None
    return await cancel(conn, under_way["id"], owner)


async def close(conn: Connection, changed: DeletionStageChanged) -> bool:
    """The grace period of ``changed.request_id`` ended: confirm it unless it was cancelled.

    Returns whether it was confirmed. A request this service does not hold (its subject
    erased with another request) has nothing left to cancel and is confirmed too, and
    confirming again (a repeated stage) is harmless: the deletion service ignores it.
    """
    if changed.stage != "holds":
        return False
    # The user's row before the request's, as a cancel takes them (active_request):
    # the other order could deadlock with a cancel or an approval of the same user.
    await conn.execute("SELECT 1 FROM users WHERE id = $1 FOR UPDATE", changed.subject_id)
    status = await conn.fetchval(
        "SELECT status FROM deletion_requests WHERE id = $1 FOR UPDATE", changed.request_id
    )
    if status == "cancelled":
        # Its DeletionCancelled went out first, in the same key's order. Announced
        # (again) after it, the deletion service cannot have taken it (lost, or
        # dead-lettered there): it is told again, and ignores a repeat.
        cancelled = DeletionCancelled(user_id=changed.subject_id, request_id=changed.request_id)
        await emit(conn, cancelled, changed.subject_id)
        return False
    if status == "requested":
        await conn.execute(
            "UPDATE deletion_requests SET status = 'confirmed', updated_at = now() WHERE id = $1",
            changed.request_id,
        )
    confirmed = DeletionConfirmed(user_id=changed.subject_id, request_id=changed.request_id)
    await emit(conn, confirmed, changed.subject_id)
    return True
