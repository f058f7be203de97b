"""The accounts API's routes in-process, against a context whose database and vault
answer 503 "store-reached": a request refused before the store shows its own answer,
and a clean one shows where the store would have been reached."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
from fastapi import APIRouter, FastAPI

from services.accounts.config import AccountsSettings
from shared.auth import issue_token
from shared.config import DEV_TOKEN_PRIVATE_KEY, DEV_TOKEN_PUBLIC_KEY
from shared.observability import Problem, install_problem_handlers


class _Unreachable:
    """Stands for the pool and the vault: any use means the request got past the checks."""

    def __getattr__(self, name: str) -> Any:
        raise Problem(503, "Store reached", slug="store-reached")


class _Context:
    pool = _Unreachable()
    vault = _Unreachable()
    settings = AccountsSettings(environment="test")


def offline_client(*routers: APIRouter) -> httpx.AsyncClient:
    app = FastAPI()
    install_problem_handlers(app)
    for router in routers:
        app.include_router(router)
    app.state.token_public_key = DEV_TOKEN_PUBLIC_KEY
    app.state.accounts = _Context()
    # httpx over ASGI rather than Starlette's TestClient, which warns (and warnings fail).
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def operator_headers(role: str) -> dict[str, str]:
    token = issue_token(
        DEV_TOKEN_PRIVATE_KEY, subject=str(uuid.uuid4()), session_id="s", kind="operator",
        ttl=timedelta(minutes=5), roles=(role,),  # type: ignore[arg-type]
    )  # fmt: skip
    return {"Authorization": f"Bearer {token}"}
