"""FastAPI dependencies: who is calling, checked the same way in every service.

``CurrentUser`` and ``require_roles(...)`` answer 401 (no or bad token) and 403 (wrong
kind or role) as problem bodies. A service may add a revocation check (accounts checks
the session is still open) as ``app.state.session_check``; it receives the request too,
so that it may keep what its query read for the route (``request.state``) instead of
the route asking the database again.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.openapi.models import HTTPBearer as HTTPBearerModel
from fastapi.security.base import SecurityBase
from fastapi.security.utils import get_authorization_scheme_param

from shared.auth.tokens import Claims, InvalidToken, OperatorRole, verify_token
from shared.observability import Problem

SessionCheck = Callable[[Request, Claims], Awaitable[bool]]
Admit = Callable[[Claims], None]


def _unauthorised() -> Problem:
    return Problem(
        401,
        "Unauthorised",
        "A valid access token is required.",
        slug="unauthorised",
        headers={"WWW-Authenticate": "Bearer"},
    )


def _forbidden(detail: str) -> Problem:
    return Problem(403, "Forbidden", detail, slug="forbidden")


class VerifiedBearer(SecurityBase):
    """The caller's claims from a verified bearer token, admitted by ``admit`` (which
    raises 403 for the wrong kind or role).

    One dependency doing it all, rather than claims depending on an ``HTTPBearer``:
    FastAPI spends measurable time on every level of dependencies of every request.
    Being a security scheme named ``HTTPBearer``, it documents the same OpenAPI
    security requirement as ``fastapi.security.HTTPBearer`` did.
    """

    def __init__(self, admit: Admit | None = None) -> None:
        self.model = HTTPBearerModel()
        self.scheme_name = "HTTPBearer"
        self._admit = admit

    async def __call__(self, request: Request) -> Claims:
        scheme, token = get_authorization_scheme_param(request.headers.get("Authorization"))
        if scheme.lower() != "bearer" or not token:
            raise _unauthorised()
        try:
            claims = verify_token(request.app.state.token_public_key, token)
        except InvalidToken:
            raise _unauthorised() from None
        check: SessionCheck | None = getattr(request.app.state, "session_check", None)
        if check is not None and not await check(request, claims):
            raise _unauthorised()
        if self._admit is not None:
            self._admit(claims)
        return claims


def _user(claims: Claims) -> None:
    if claims.kind != "user":
        raise _forbidden("This endpoint is for users.")


current_claims = VerifiedBearer()
"""Any valid caller, user or operator."""

current_user = VerifiedBearer(_user)


def require_roles(*roles: OperatorRole) -> VerifiedBearer:
    """Dependency admitting operators holding any of ``roles`` (need-to-know)."""

    def operator(claims: Claims) -> None:
        if claims.kind != "operator" or not set(claims.roles) & set(roles):
            raise _forbidden("Your role does not allow this.")

    return VerifiedBearer(operator)


CurrentUser = Annotated[Claims, Depends(current_user)]
