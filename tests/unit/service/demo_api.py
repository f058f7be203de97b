"""A service API built the platform's way (``create_api``) around a test's routes, and a
client calling it in process (httpx over ASGI: Starlette's TestClient warns, and warnings
fail)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from fastapi import APIRouter, FastAPI

from shared.observability import Metrics
from shared.service import create_api

PREFIX = "/api/demo"


def demo_app(router: APIRouter) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield

    return create_api(
        service="demo", title="demo", version="1", routers=[router], lifespan=lifespan,
        readiness=dict, metrics=Metrics("demo"),
    )  # fmt: skip


def demo_client(router: APIRouter) -> httpx.AsyncClient:
    transport = httpx.ASGITransport(app=demo_app(router))
    return httpx.AsyncClient(transport=transport, base_url="http://test")
