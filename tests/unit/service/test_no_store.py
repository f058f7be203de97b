"""No API answer may be kept by a browser or a proxy unless its route says so."""

from __future__ import annotations

import httpx
from fastapi import APIRouter, Response

from shared.observability import Problem
from tests.unit.service.demo_api import demo_client


def _client() -> httpx.AsyncClient:
    router = APIRouter()

    @router.get("/me")
    async def me() -> dict[str, str]:
        return {"name": "Ada"}

    @router.get("/catalogue")
    async def catalogue(response: Response) -> dict[str, str]:
        response.headers["Cache-Control"] = "public, max-age=60"
        return {"models": "all"}

    @router.get("/missing")
    async def missing() -> None:
        raise Problem(404)

    return demo_client(router)


async def test_answers_and_problems_are_not_stored_unless_the_route_says_so() -> None:
    async with _client() as client:
        me = await client.get("/api/demo/me")
        missing = await client.get("/api/demo/missing")
        unknown = await client.get("/api/demo/nothing-here")
        catalogue = await client.get("/api/demo/catalogue")

    assert me.headers.get_list("cache-control") == ["no-store"]
    assert missing.headers.get_list("cache-control") == ["no-store"]
    assert unknown.headers.get_list("cache-control") == ["no-store"]
    assert catalogue.headers.get_list("cache-control") == ["public, max-age=60"]
