"""Query bounds of the analytics routes are refused with 422, never silently clamped."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.analytics.routes import trends
from services.analytics.routes.trends import MAX_SUPPRESSED_DAYS
from shared.auth import issue_token
from shared.config import DEV_TOKEN_PRIVATE_KEY, DEV_TOKEN_PUBLIC_KEY
from shared.observability import Problem, install_problem_handlers


class _Unreachable:
    """Stands for the pool: any use means the request got past validation."""

    def __getattr__(self, name: str) -> Any:
        raise Problem(503, "Store reached", slug="store-reached")


def _client() -> httpx.AsyncClient:
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(trends.router)
    app.state.token_public_key = DEV_TOKEN_PUBLIC_KEY
    app.state.pool = _Unreachable()
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def _analyst() -> dict[str, str]:
    token = issue_token(
        DEV_TOKEN_PRIVATE_KEY, subject=str(uuid.uuid4()), session_id="s", kind="operator",
        ttl=timedelta(minutes=5), roles=("analyst",),
    )  # fmt: skip
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("days", [-5, -1, MAX_SUPPRESSED_DAYS + 1, 100_000])
async def test_suppressed_days_out_of_range_are_refused(days: int) -> None:
    async with _client() as client:
        refused = await client.get("/suppressed", params={"days": days}, headers=_analyst())
    assert refused.status_code == 422, refused.text
    assert [e["location"] for e in refused.json()["errors"]] == ["query.days"]


@pytest.mark.parametrize("days", [None, 0, 30, MAX_SUPPRESSED_DAYS])
async def test_suppressed_days_in_range_reach_the_store(days: int | None) -> None:
    params = {} if days is None else {"days": days}
    async with _client() as client:
        answer = await client.get("/suppressed", params=params, headers=_analyst())
    assert answer.status_code == 503, answer.text  # past validation
