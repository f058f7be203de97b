"""Fixtures of the accounts end-to-end tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from shared.config import PlatformSettings
from tests.e2e.accounts.support import BusTail, Operator, admin, start_tail

# Every test client reaches the gateway from 127.0.0.1: the per-address login throttle
# would make unrelated tests wait on each other's failures. The per-account throttle
# is what these tests exercise; the per-address rules are unit-tested.
os.environ.setdefault("IMT_ACCOUNTS_CLIENT_FREE_FAILURES", "1000000")
# A first back-off of 4 s rather than 1 s: the request that must meet it is sent right
# after the failure that starts it, and a slow run must not let the back-off end first.
os.environ.setdefault("IMT_ACCOUNTS_BACKOFF_BASE_SECONDS", "4")


@pytest.fixture(scope="session")
async def bus(settings: PlatformSettings) -> AsyncIterator[BusTail]:
    tail = await start_tail(settings)
    yield tail
    assert tail.task is not None
    tail.task.cancel()
    await tail.consumer.stop()


@pytest.fixture
async def client(platform: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=platform, timeout=30) as c:
        yield c


@pytest.fixture
async def db(settings: PlatformSettings) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(settings.database_dsn("accounts"))
    yield conn
    await conn.close()


@pytest.fixture
async def root(client: httpx.AsyncClient) -> Operator:
    return await admin(client)
