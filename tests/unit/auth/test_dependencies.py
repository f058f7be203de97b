"""Who is calling: one dependency verifies the bearer token, asks the service's session
check, and admits by kind and role; OpenAPI documents it as the HTTPBearer scheme."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Annotated, Any

import httpx
from fastapi import Depends, FastAPI, Request

from shared.auth import Claims, CurrentUser, current_claims, issue_token, require_roles
from shared.config import DEV_TOKEN_PRIVATE_KEY, DEV_TOKEN_PUBLIC_KEY
from shared.observability import install_problem_handlers


def _app(open_sessions: set[str]) -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    app.state.token_public_key = DEV_TOKEN_PUBLIC_KEY

    async def session_check(request: Request, claims: Claims) -> bool:
        request.state.seen = claims.sid  # a check may leave what it read for the route
        return claims.sid in open_sessions

    app.state.session_check = session_check

    @app.get("/user")
    async def user(claims: CurrentUser, request: Request) -> dict[str, Any]:
        return {"sub": claims.sub, "seen": request.state.seen}

    @app.get("/anyone")
    async def anyone(claims: Annotated[Claims, Depends(current_claims)]) -> dict[str, str]:
        return {"kind": claims.kind}

    @app.get("/officers")
    async def officers(
        claims: Annotated[Claims, Depends(require_roles("privacy_officer"))],
    ) -> dict[str, str]:
        return {"sub": claims.sub}

    return app


def _client(app: FastAPI) -> httpx.AsyncClient:
    # httpx over ASGI rather than Starlette's TestClient, which warns (and warnings fail).
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def _bearer(kind: str = "user", sid: str = "open", roles: tuple[Any, ...] = ()) -> dict[str, str]:
    token = issue_token(
        DEV_TOKEN_PRIVATE_KEY, subject=str(uuid.uuid4()), session_id=sid, kind=kind,  # type: ignore[arg-type]
        ttl=timedelta(minutes=5), roles=roles,
    )  # fmt: skip
    return {"Authorization": f"Bearer {token}"}


async def test_no_token_a_bad_token_or_another_scheme_is_401() -> None:
    client = _client(_app({"open"}))
    for headers in ({}, {"Authorization": "Bearer"}, {"Authorization": "Bearer x.y.z"},
                    {"Authorization": "Basic dXNlcjpwdw=="}):  # fmt: skip
        response = await client.get("/user", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["www-authenticate"] == "Bearer"


async def test_a_closed_session_is_401_and_the_check_sees_the_request() -> None:
    client = _client(_app({"open"}))
    assert (await client.get("/user", headers=_bearer(sid="closed"))).status_code == 401
    response = await client.get("/user", headers=_bearer(sid="open"))
    assert response.status_code == 200
    assert response.json()["seen"] == "open"


async def test_kinds_and_roles_are_admitted_as_before() -> None:
    client = _client(_app({"open"}))
    operator = _bearer(kind="operator", roles=("support",))
    officer = _bearer(kind="operator", roles=("privacy_officer",))
    assert (await client.get("/user", headers=operator)).status_code == 403
    assert (await client.get("/anyone", headers=operator)).json() == {"kind": "operator"}
    assert (await client.get("/anyone", headers=_bearer())).json() == {"kind": "user"}
    assert (await client.get("/officers", headers=operator)).status_code == 403
    assert (await client.get("/officers", headers=_bearer())).status_code == 403
    assert (await client.get("/officers", headers=officer)).status_code == 200


def test_openapi_documents_the_http_bearer_scheme() -> None:
    spec = _app(set()).openapi()
    assert spec["components"]["securitySchemes"] == {
        "HTTPBearer": {"type": "http", "scheme": "bearer"}
    }
    for path in ("/user", "/anyone", "/officers"):
        assert spec["paths"][path]["get"]["security"] == [{"HTTPBearer": []}]
