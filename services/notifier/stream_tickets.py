"""Tickets for the live inbox stream: what a browser's EventSource presents instead of a
bearer token (it cannot send headers).

A ticket is issued to a caller with a valid token, lives ``TICKET_SECONDS`` and is spent
on first use, so one that ends up in an access log (it travels in the query string) is
already worthless. Only its SHA-256 is stored.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from uuid import UUID

from shared.db.pool import Connection

TICKET_SECONDS = 30


def _hash(ticket: str) -> bytes:
    return hashlib.sha256(ticket.encode()).digest()


async def issue(conn: Connection, user_id: UUID) -> str:
    """A fresh ticket for ``user_id`` (expired ones of anyone are cleared on the way)."""
    ticket = secrets.token_urlsafe(32)
    await conn.execute("DELETE FROM stream_tickets WHERE expires_at < now()")
    await conn.execute(
        "INSERT INTO stream_tickets (ticket_hash, user_id, expires_at)"
        " VALUES ($1, $2, now() + $3::interval)",
        _hash(ticket),
        user_id,
        timedelta(seconds=TICKET_SECONDS),
    )
    return ticket


async def redeem(conn: Connection, ticket: str) -> UUID | None:
    """The ticket's user, spending it; None when unknown, spent or expired."""
    user_id: UUID | None = await conn.fetchval(
        "DELETE FROM stream_tickets WHERE ticket_hash = $1 RETURNING"
        " CASE WHEN expires_at > now() THEN user_id END",
        _hash(ticket),
    )
    return user_id


async def erase(conn: Connection, user_id: UUID) -> int:
    """Erasure: the subject's outstanding tickets."""
    status = await conn.execute("DELETE FROM stream_tickets WHERE user_id = $1", user_id)
    return int(status.split()[-1])
