"""Sessions: an access token (5 min) plus a rotating refresh token, per session.

A session is a refresh-token family. Reusing a spent refresh token revokes the whole
family (the token was stolen, or the client is confused: either way, log in again),
but for a retry of a refresh whose answer was lost (see :func:`rotate`).
Access tokens carry the session id and every accounts request checks the session is
still open, so logout and password changes take effect at once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from uuid import UUID, uuid4

from fastapi import Request
from pydantic import BaseModel

from services.accounts import store
from services.accounts.context import Context
from services.accounts.security import (
    access_token,
    new_secret,
    open_successor,
    seal_successor,
    secret_hash,
)
from shared.auth import Claims
from shared.db.pool import Connection
from shared.observability import Problem


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: str = "Bearer"  # noqa: S105 - the scheme name, not a secret
    expires_in: int


def access_for(
    ctx: Context,
    principal: store.Row,
    kind: str,
    session_id: UUID,
    expires_at: datetime | None = None,
) -> str:
    """An access token for the principal's session, with its claims as they are now, for
    the configured lifetime (or until ``expires_at``, if sooner)."""
    seconds = ctx.settings.accounts_access_token_seconds
    if kind == "operator":
        return access_token(
            ctx.private_key,
            subject=str(principal["id"]),
            session_id=str(session_id),
            kind="operator",
            seconds=seconds,
            # No role until the operator has set their own password: the other APIs
            # then refuse the token too (403), not only accounts.
            roles=tuple(principal["roles"]) if has_own_password(principal) else (),
            expires_at=expires_at,
        )
    return access_token(
        ctx.private_key,
        subject=str(principal["id"]),
        session_id=str(session_id),
        kind="user",
        seconds=seconds,
        expires_at=expires_at,
        age_band=principal["age_band"],
        tracking_opt_out=principal["tracking_opt_out"],
    )


async def _new_refresh(ctx: Context, conn: Connection, session_id: UUID) -> str:
    refresh = new_secret()
    expires = datetime.now(UTC) + timedelta(days=ctx.settings.accounts_refresh_token_days)
    await store.add_refresh_token(conn, secret_hash(refresh), session_id, expires)
    return refresh


async def start_session(
    ctx: Context, conn: Connection, principal: store.Row, kind: str
) -> TokenPair:
    session_id, refresh = uuid4(), new_secret()
    expires = datetime.now(UTC) + timedelta(days=ctx.settings.accounts_refresh_token_days)
    await store.open_session_with_refresh(
        conn, session_id, principal["id"], kind, secret_hash(refresh), expires
    )
    return TokenPair(
        access_token=access_for(ctx, principal, kind, session_id),
        refresh_token=refresh,
        expires_in=ctx.settings.accounts_access_token_seconds,
    )


def has_own_password(operator: store.Row) -> bool:
    """Whether the operator set their password themselves (not only their creator)."""
    return operator["password_set_at"] is not None


Endpoint = TypeVar("Endpoint", bound=Callable[..., Any])
_BEFORE_OWN_PASSWORD: set[Callable[..., Any]] = set()


def before_own_password(endpoint: Endpoint) -> Endpoint:
    """Mark a route an operator may call before setting their own password (setting it,
    logging out); every other answers them ``403 password-change-required``."""
    _BEFORE_OWN_PASSWORD.add(endpoint)
    return endpoint


def password_change_required() -> Problem:
    return Problem(
        403,
        "Password change required",
        "Your password was chosen by the operator who created your identity: set your own"
        " (POST /api/accounts/operator/me/password) before anything else.",
        slug="password-change-required",
    )


def _open_before_own_password(request: Request) -> bool:
    route = request.scope.get("route")
    return getattr(route, "endpoint", None) in _BEFORE_OWN_PASSWORD


class RefreshRefused(Exception):
    """The refresh token is unknown, expired, revoked or was already used."""


async def rotate(ctx: Context, conn: Connection, refresh: str) -> TokenPair:
    """Spend ``refresh`` and issue a new pair in the same session (caller's transaction).

    A token used twice revokes its session, unless it is sent again within the grace
    (``accounts_refresh_reuse_grace_seconds``) while the token it was traded for is still
    unused: its answer was lost, or two tabs sent it at once, and the same successor is
    answered again. The caller must commit a revocation before answering (so it raises
    only after the transaction).
    """
    row = await store.refresh_token(conn, secret_hash(refresh))
    if row is None or row["revoked_at"] is not None:
        raise RefreshRefused
    if row["used_at"] is not None:
        successor = await _answered_before(ctx, conn, row, refresh)
        if successor is None:
            await store.revoke_session(conn, row["session_id"], "refresh-token-reuse")
            raise RefreshRefused
    elif row["expires_at"] <= datetime.now(UTC):
        raise RefreshRefused
    else:
        successor = await _new_refresh(ctx, conn, row["session_id"])
        await store.spend_refresh_token(
            conn, row["token_hash"], secret_hash(successor), seal_successor(refresh, successor)
        )
    if row["kind"] == "operator":
        principal = await conn.fetchrow(
            "SELECT * FROM operators WHERE id = $1 AND disabled_at IS NULL", row["principal_id"]
        )
    else:
        principal = await conn.fetchrow(
            "SELECT * FROM users WHERE id = $1 AND active", row["principal_id"]
        )
    if principal is None:
        await store.revoke_session(conn, row["session_id"], "principal-gone")
        raise RefreshRefused
    return TokenPair(
        access_token=access_for(ctx, principal, row["kind"], row["session_id"]),
        refresh_token=successor,
        expires_in=ctx.settings.accounts_access_token_seconds,
    )


async def _answered_before(
    ctx: Context, conn: Connection, row: store.Row, refresh: str
) -> str | None:
    """The successor ``refresh`` was traded for, if it may be answered again: within the
    grace of the first use, and not used since (whoever has it would not ask again)."""
    grace = timedelta(seconds=ctx.settings.accounts_refresh_reuse_grace_seconds)
    if row["successor_hash"] is None or row["used_at"] + grace < datetime.now(UTC):
        return None
    if not await store.unused_refresh_token(conn, row["successor_hash"]):
        return None
    return open_successor(refresh, row["successor_sealed"])


def session_checker(ctx: Context) -> Callable[[Request, Claims], Awaitable[bool]]:
    """``app.state.session_check``: is the token's session still open?

    For an operator, also: not disabled (False: 401), and, unless the route is one of
    :func:`before_own_password`'s, with a password of their own (else ``403
    password-change-required``). For a user, the same query reads the user's row and
    keeps it on ``request.state`` (see :func:`session_user`): a route that only reads
    the profile then needs no second round trip to the database.
    """

    async def check(request: Request, claims: Claims) -> bool:
        try:
            session_id, principal_id = UUID(claims.sid), UUID(claims.sub)
        except ValueError:
            return False
        async with ctx.pool.acquire() as conn:
            if claims.kind != "user":
                operator = await store.operator_session(conn, session_id, principal_id)
            else:
                row = await store.user_session(conn, session_id, principal_id)
        if claims.kind != "user":
            if operator is None or operator["disabled_at"] is not None:
                return False  # the session ended, or the operator is disabled
            if operator["kind"] != "operator" or operator["id"] is None:
                # An operator's token for a user's session: only the signing key makes
                # one, and it would otherwise pass for an operator.
                raise Problem(
                    403, "Forbidden", "This token is not an operator's.", slug="forbidden"
                )
            if not has_own_password(operator) and not _open_before_own_password(request):
                raise password_change_required()
            return True
        if row is None:
            return False
        request.state.session_user = row if row["id"] is not None else None
        return True

    return check


def session_user(request: Request) -> store.Row | None:
    """The user's row read by the session check of this request (None: the user is gone).

    Read before the route ran and outside its transaction: for answering reads only,
    never as the basis of a change (a route that changes the user reads it again,
    locked, in its transaction).
    """
    row: store.Row | None = request.state.session_user
    return row
