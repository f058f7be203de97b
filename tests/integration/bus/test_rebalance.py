"""Members joining and leaving a consumer group while polls are being applied.

Tombstones carry no id, so no mark skips one read twice: every record here is a
tombstone, and each application is a row. A partition handed to another member must
resume where its effects end, neither applied by two members at once nor read again
from an older commit, and its read-ahead poll must not be applied by the member that
lost it.
"""

import asyncio
from collections.abc import AsyncIterator, Sequence
from contextlib import AbstractAsyncContextManager

import asyncpg
import pytest

from shared.bus import IdempotentConsumer, reliable_producer
from shared.bus.consumer import Handler, Item
from shared.config import PlatformSettings
from shared.db.pool import Connection
from tests.support.bus import running_consumer

RECORDS = 600
APPLIED_DDL = """
CREATE TABLE applied (partition int NOT NULL, "offset" bigint NOT NULL, member text NOT NULL)
"""


def applying_slowly(
    member: str, applied: asyncio.Event | None = None, slower_until: asyncio.Event | None = None
) -> Handler:
    """A handler that records each application and holds its transaction a while, so that
    a rebalance finds a poll being applied. It sets ``applied`` once it applied a poll,
    and holds each poll five times as long until ``slower_until`` is set."""

    async def handle(conn: Connection, items: Sequence[Item]) -> None:
        await conn.executemany(
            'INSERT INTO applied (partition, "offset", member) VALUES ($1, $2, $3)',
            [(i.partition, i.offset, member) for i in items],
        )
        slow = slower_until is not None and not slower_until.is_set()
        await asyncio.sleep(1.0 if slow else 0.2)
        if applied is not None:
            applied.set()

    return handle


@pytest.fixture
async def applied(scratch_dsn: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(scratch_dsn)
    await conn.execute(APPLIED_DDL)
    yield conn
    await conn.close()


async def _tombstones(settings: PlatformSettings, topic: str, count: int) -> None:
    producer = reliable_producer(settings)
    await producer.start()
    try:
        sent = [await producer.send(topic, key=f"k{n}".encode(), value=None) for n in range(count)]
        await asyncio.gather(*sent)
    finally:
        await producer.stop()


async def _until(conn: asyncpg.Connection, query: str, wanted: int, timeout: float) -> int:
    deadline = asyncio.get_running_loop().time() + timeout
    while (got := await conn.fetchval(query)) < wanted:
        if asyncio.get_running_loop().time() > deadline:
            return int(got)
        await asyncio.sleep(0.1)
    return int(got)


DISTINCT = 'SELECT count(DISTINCT (partition, "offset")) FROM applied'


async def test_a_rebalance_hands_partitions_over_where_their_effects_end(
    settings: PlatformSettings, scratch_dsn: str, scratch_topic: str, applied: asyncpg.Connection
) -> None:
    group = f"{scratch_topic}.rebalance"
    await _tombstones(settings, scratch_topic, RECORDS)

    b_applied = asyncio.Event()

    def member(name: str, handler: Handler) -> AbstractAsyncContextManager[IdempotentConsumer]:
        return running_consumer(
            settings, scratch_dsn, scratch_topic, group, handler, max_poll_records=10
        )

    # Until b has applied a poll, a goes at 10 records a second: b's join (start, group
    # rebalance; seconds, or tens of them on a busy machine) always finds work left.
    async with member("a", applying_slowly("a", slower_until=b_applied)):
        assert await _until(applied, DISTINCT, 60, timeout=60) >= 60
        async with member("b", applying_slowly("b", applied=b_applied)):
            # b takes partitions over while a is applying polls: then b leaves again.
            by_b = await _until(applied, "SELECT count(*) FROM applied WHERE member = 'b'", 30, 60)
            assert by_b >= 1, "b was given no partition with records left"
        assert await _until(applied, DISTINCT, RECORDS, timeout=120) == RECORDS

    twice = await applied.fetch(
        'SELECT partition, "offset", array_agg(member) AS members FROM applied'
        " GROUP BY 1, 2 HAVING count(*) > 1 ORDER BY 1, 2"
    )
    assert [dict(r) for r in twice] == []
    members = await applied.fetchval(
        "SELECT array_agg(DISTINCT member ORDER BY member) FROM applied"
    )
    assert members == ["a", "b"]  # the partitions did change hands
