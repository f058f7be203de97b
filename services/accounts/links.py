"""Mailed action links (verify an email, a guardian's consent, reset a password): one-time
tokens whose hash is stored, mailed through the notifier in the same transaction."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal
from uuid import UUID

from services.accounts import store
from services.accounts.context import Context, notify
from services.accounts.security import new_secret, secret_hash
from shared.db.pool import Connection
from shared.observability import Problem


async def new_action_token(
    ctx: Context,
    conn: Connection,
    user_id: UUID,
    purpose: str,
    lifetime: timedelta | None = None,
    email_index: bytes | None = None,
    deletion_request_id: UUID | None = None,
) -> str:
    """A fresh one-time token for ``purpose`` (and the address it confirms, or the
    deletion request it cancels, if any); only its hash is kept."""
    token = new_secret()
    expires = datetime.now(UTC) + (lifetime or timedelta(hours=ctx.settings.accounts_link_hours))
    await store.add_action_token(
        conn, secret_hash(token), user_id, purpose, expires, email_index, deletion_request_id
    )
    return token


def link_invalid(detail: str = "This link is invalid, expired or already used.") -> Problem:
    """An unknown, expired or revoked link (or one spent by another, since)."""
    return Problem(400, "Link invalid", detail, slug="link-invalid")


def link_used(detail: str) -> Problem:
    """A link whose use went through already: a retry (its answer lost on the way, a
    second tab) is told what was done, not that the link is invalid. Only the holder of
    the link's secret token hears it, who did it or shares the mailbox it went to."""
    return Problem(409, "Link already used", detail, slug="link-used")


async def mail_action_link(
    ctx: Context,
    conn: Connection,
    user_id: UUID,
    *,
    purpose: str,
    template: str,
    path: str,
    recipient: Literal["user", "guardian"] = "user",
    lifetime: timedelta | None = None,
    card_changed_at: datetime | None = None,
    email_index: bytes | None = None,
    params: dict[str, str] | None = None,
) -> None:
    """Create a token for ``purpose`` and ask the notifier to mail its link (once its copy
    of the card is at least ``card_changed_at`` new, for a link to a changed address).
    A link confirming an address names it by ``email_index``: it confirms that one only."""
    token = await new_action_token(ctx, conn, user_id, purpose, lifetime, email_index)
    await notify(
        conn,
        template=template,
        category="transactional",
        user_ids=(user_id,),
        params={"token": token, "link": ctx.link(path, token), **(params or {})},
        channels=("email",),
        recipient=recipient,
        card_changed_at=card_changed_at,
    )
