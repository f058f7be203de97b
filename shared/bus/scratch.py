"""Throw-away topics and databases for the bus self-test, its tests and benchmarks.

They need the maintenance role (``imt_admin``: CREATEDB) and a broker that lets this
client create and delete topics; names are unique per use and everything is removed
on exit, so runs never share data.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from shared.bus.kafka_options import client_options
from shared.config import PlatformSettings
from shared.db.migrations import apply_migrations, migration_files
from shared.db.prepare import BUS_MIGRATIONS
from shared.events.topics import BUS_SELFTEST, dead_letter_topic, dlq_of

ADMIN_ROLE = "imt_admin"


def admin_dsn(settings: PlatformSettings, database: str) -> str:
    """DSN of the maintenance role on ``database``."""
    password = settings.postgres_password.get_secret_value()
    return (
        f"postgresql://{ADMIN_ROLE}:{password}@{settings.postgres_host}:"
        f"{settings.postgres_port}/{database}"
    )


@asynccontextmanager
async def scratch_database(
    settings: PlatformSettings, extra_ddl: Sequence[str] = (), prefix: str = "scratch"
) -> AsyncIterator[str]:
    """A new database with the bus tables (and ``extra_ddl``), dropped on exit; its DSN."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(admin_dsn(settings, "postgres"))
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
        try:
            dsn = admin_dsn(settings, name)
            conn = await asyncpg.connect(dsn)
            try:
                await apply_migrations(conn, migration_files("bus", BUS_MIGRATIONS))
                for ddl in extra_ddl:
                    await conn.execute(ddl)
            finally:
                await conn.close()
            yield dsn
        finally:
            await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@asynccontextmanager
async def created_topics(
    settings: PlatformSettings, topics: Sequence[NewTopic]
) -> AsyncIterator[None]:
    """Create ``topics``, wait until each partition has a leader; delete them on exit."""
    names = [t.name for t in topics]
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        await admin.create_topics(list(topics), timeout_ms=30_000)
        try:
            await wait_for_leaders(admin, names)
            yield
        finally:
            await admin.delete_topics(names, timeout_ms=30_000)
    finally:
        await admin.close()


@asynccontextmanager
async def scratch_topic(
    settings: PlatformSettings, partitions: int = BUS_SELFTEST.partitions
) -> AsyncIterator[str]:
    """A fresh ``bus.selftest.<hex>`` topic (bus.selftest's settings) and its DLQ."""
    name = f"{BUS_SELFTEST.name}.{uuid.uuid4().hex[:12]}"
    topics = [
        NewTopic(name, partitions, 1, topic_configs=BUS_SELFTEST.config()),
        NewTopic(dlq_of(name), 1, 1, topic_configs=dead_letter_topic(BUS_SELFTEST).config()),
    ]
    async with created_topics(settings, topics):
        yield name


@asynccontextmanager
async def scratch_copies(
    settings: PlatformSettings,
    topics: Sequence[str],
    partitions: int = 1,
    dead_letters: Sequence[str] = (),
) -> AsyncIterator[str]:
    """Copies of ``topics`` named ``<topic>.t<hex>`` (their events belong on them, see
    ``shared.bus.delivery.belongs_on``), and the dead-letter topics of the copies of
    ``dead_letters``; deleted on exit. Yields the suffix."""
    suffix = f".t{uuid.uuid4().hex[:10]}"
    copies = [NewTopic(f"{t}{suffix}", partitions, 1) for t in topics]
    letters = dead_letter_topic(BUS_SELFTEST).config()  # a DLQ's settings, whatever its source
    copies += [NewTopic(dlq_of(f"{t}{suffix}"), 1, 1, topic_configs=letters) for t in dead_letters]
    async with created_topics(settings, copies):
        yield suffix


async def wait_for_leaders(admin: AIOKafkaAdminClient, topics: list[str]) -> None:
    """Wait until every partition of ``topics`` has a leader (created topics are usable)."""
    for _ in range(100):
        described = await admin.describe_topics(topics)
        if all(
            t["partitions"] and all(p["leader"] >= 0 for p in t["partitions"]) for t in described
        ):
            return
        await asyncio.sleep(0.1)
    raise TimeoutError(f"topics {topics} have no leader")
