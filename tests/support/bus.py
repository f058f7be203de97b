"""Running the bus's real parts inside a test: a relay and an idempotent consumer."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager

import asyncpg

from shared.bus import IdempotentConsumer, OutboxRelay, manual_commit_consumer
from shared.bus.consumer import Handler
from shared.bus.dead_letters import letter_producer
from shared.bus.selftest import record_probe_effects
from shared.config import PlatformSettings


@asynccontextmanager
async def running_consumer(
    settings: PlatformSettings,
    dsn: str,
    topic: str,
    group: str,
    handler: Handler = record_probe_effects,
    *,
    with_relay: bool = False,
    max_poll_records: int = 1000,
    also: Sequence[str] = (),
) -> AsyncIterator[IdempotentConsumer]:
    """An idempotent consumer of ``topic`` (and of the topics ``also`` names, and the
    outbox relay of ``dsn``) until exit."""
    producer = letter_producer(settings)
    consumer = manual_commit_consumer(
        settings, topic, *also, group_id=group, max_poll_records=max_poll_records
    )
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    idempotent = IdempotentConsumer("probe", consumer, producer, pool, handler)
    await producer.start()
    await consumer.start()
    relay = OutboxRelay(dsn, producer)
    tasks = [asyncio.create_task(idempotent.run())]
    if with_relay:
        tasks.append(asyncio.create_task(relay.run()))
    try:
        yield idempotent
    finally:
        relay.stop()
        idempotent.stop()
        await asyncio.gather(*tasks)
        await consumer.stop()
        await producer.stop()
        await pool.close()
