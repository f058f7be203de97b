"""Tickets for the live inbox stream: what a browser's EventSource presents instead of a
bearer token (it cannot send headers).

A ticket is issued to a caller with a valid token, lives ``TICKET_SECONDS`` and is spent
on first use, so one that ends up in an access log (it travels in the query string) is
already worthless. Only its SHA-256 is stored. It keeps the token's session and times:
the stream it opens answers to them as a token would (revoked, expired: it ends).
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import timedelta
from uuid import UUID

from shared.auth import Claims
from shared.db.pool import Connection

TICKET_SECONDS = 30


def _hash(ticket: str) -> bytes:
    return hashlib.sha256(ticket.encode()).digest()


async def issue(conn: Connection, claims: Claims) -> str:
    """A fresh ticket for the token's user and session (expired ones of anyone are
    cleared on the way)."""
    ticket = secrets.token_urlsafe(32)
    await conn.execute("DELETE FROM stream_tickets WHERE expires_at < now()")
    await conn.execute(
        "INSERT INTO stream_tickets"
        " (ticket_hash, user_id, expires_at, session_id, token_iat, token_exp)"
        " VALUES ($1, $2, now() + $3::interval, $4, $5, $6)",
        _hash(ticket),
        UUID(claims.sub),
        timedelta(seconds=TICKET_SECONDS),
        claims.sid,
        claims.iat,
        claims.exp,
    )
    return ticket


async def redeem(conn: Connection, ticket: str) -> Claims | None:
    """The claims of the token that bought the ticket, spending it; None when unknown,
    spent or expired."""
    row = await conn.fetchrow(
        "DELETE FROM stream_tickets WHERE ticket_hash = $1"
        " RETURNING expires_at > now() AS live, user_id, session_id, token_iat, token_exp",
        _hash(ticket),
    )
    if row is None or not row["live"] or row["session_id"] is None:
        return None  # a ticket from before sessions were kept: bought again
    return Claims(
        sub=str(row["user_id"]),
        sid=row["session_id"],
        kind="user",
        iat=row["token_iat"],
        exp=row["token_exp"],
    )


async def erase(conn: Connection, user_id: UUID) -> int:
    """Erasure: the subject's outstanding tickets."""
    status = await conn.execute("DELETE FROM stream_tickets WHERE user_id = $1", user_id)
    return int(status.split()[-1])
