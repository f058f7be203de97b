"""FastAPI dependencies: who is calling, checked the same way in every service.

``CurrentUser`` and ``require_roles(...)`` answer 401 (no or bad token) and 403 (wrong
kind or role) as problem bodies. A service may add a revocation check (accounts checks
the session is still open) through ``set_session_check``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.auth.tokens import Claims, InvalidToken, OperatorRole, verify_token
from shared.observability import Problem

SessionCheck = Callable[[Claims], Awaitable[bool]]
_bearer = HTTPBearer(auto_error=False)


def _unauthorised() -> Problem:
    return Problem(
        401,
        "Unauthorised",
        "A valid access token is required.",
        slug="unauthorised",
        headers={"WWW-Authenticate": "Bearer"},
    )


async def current_claims(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Claims:
    if credentials is None:
        raise _unauthorised()
    try:
        claims = verify_token(request.app.state.token_public_key, credentials.credentials)
    except InvalidToken:
        raise _unauthorised() from None
    check: SessionCheck | None = getattr(request.app.state, "session_check", None)
    if check is not None and not await check(claims):
        raise _unauthorised()
    return claims


async def current_user(claims: Annotated[Claims, Depends(current_claims)]) -> Claims:
    if claims.kind != "user":
        raise Problem(403, "Forbidden", "This endpoint is for users.", slug="forbidden")
    return claims


def require_roles(*roles: OperatorRole) -> Callable[[Claims], Awaitable[Claims]]:
    """Dependency admitting operators holding any of ``roles`` (need-to-know)."""

    async def operator(claims: Annotated[Claims, Depends(current_claims)]) -> Claims:
        if claims.kind != "operator" or not set(claims.roles) & set(roles):
            raise Problem(403, "Forbidden", "Your role does not allow this.", slug="forbidden")
        return claims

    return operator


CurrentUser = Annotated[Claims, Depends(current_user)]
