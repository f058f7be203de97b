"""Fixtures for tests that need the real stack: it is started here, by the test run.

``ensure_up`` reuses a stack that ``make run`` (or an earlier test run) already
started; what this session started itself is left running for the next run unless
IMT_TEST_STOP_STACK=1 (CI sets it through the Makefile).
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Iterator

import asyncpg
import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.bus.kafka_options import client_options
from shared.config import PlatformSettings
from shared.db.migrations import apply_migrations, migration_files
from shared.db.prepare import BUS_MIGRATIONS
from shared.events.topics import dlq_of

ADMIN_ROLE = "imt_admin"


@pytest.fixture(scope="session")
def stack() -> Iterator[None]:
    from deploy.local import stack as local_stack

    # Every test client shares 127.0.0.1: the gateway's per-client limit must not bite.
    os.environ.setdefault("IMT_GATEWAY_RATE_PER_SECOND", "5000")
    local_stack.ensure_up(["kafka", "postgres", "smtp", "gateway"])
    yield
    if os.environ.get("IMT_TEST_STOP_STACK") == "1":
        local_stack.shut_down()


@pytest.fixture(scope="session")
def settings(stack: None) -> PlatformSettings:
    return PlatformSettings(environment="test")


def admin_dsn(settings: PlatformSettings, database: str) -> str:
    password = settings.postgres_password.get_secret_value()
    return (
        f"postgresql://{ADMIN_ROLE}:{password}@{settings.postgres_host}:"
        f"{settings.postgres_port}/{database}"
    )


@pytest.fixture
async def scratch_dsn(settings: PlatformSettings) -> AsyncIterator[str]:
    """A new database with the bus tables, dropped after the test."""
    name = f"scratch_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn(settings, "postgres"))
    await admin.execute(f'CREATE DATABASE "{name}"')
    dsn = admin_dsn(settings, name)
    conn = await asyncpg.connect(dsn)
    await apply_migrations(conn, migration_files("bus", BUS_MIGRATIONS))
    await conn.close()
    try:
        yield dsn
    finally:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await admin.close()


@pytest.fixture
async def scratch_topic(settings: PlatformSettings) -> AsyncIterator[str]:
    """A fresh ``bus.selftest.<id>`` topic (3 partitions) with its DLQ."""
    name = f"bus.selftest.{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, 3, 1), NewTopic(dlq_of(name), 1, 1)], timeout_ms=30_000
        )
        await wait_for_leaders(admin, [name, dlq_of(name)])
        yield name
        await admin.delete_topics([name, dlq_of(name)], timeout_ms=30_000)
    finally:
        await admin.close()


async def wait_for_leaders(admin: AIOKafkaAdminClient, topics: list[str]) -> None:
    for _ in range(100):
        described = await admin.describe_topics(topics)
        if all(
            t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"]) for t in described
        ):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"topics {topics} have no leader")
