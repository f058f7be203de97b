"""Fixtures of the accounts end-to-end tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest

from shared.config import PlatformSettings
from tests.e2e.accounts.support import BusTail, Operator, admin, start_tail

# (The per-address login throttle is lifted for every run: tests/support/platform.py.)
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


@pytest.fixture
async def other_root(client: httpx.AsyncClient) -> Operator:
    """The second first admin: the line an approver of ``root``'s line comes from."""
    return await admin(client, second=True)
