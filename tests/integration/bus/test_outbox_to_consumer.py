"""Outbox -> relay -> Kafka -> idempotent consumer, in one process."""

import asyncio
from collections.abc import AsyncIterator, Sequence

import asyncpg
import pytest

from shared.bus import add_envelopes
from shared.bus.consumer import Item
from shared.bus.selftest import probe_envelopes, queue_probes, record_probe_effects
from shared.config import PlatformSettings
from shared.db.pool import Connection
from shared.observability import Metrics
from tests.support.bus import running_consumer
from tests.support.probes import (
    effects_exactly_once_in_order,
    probe_keys_and_seqs,
    wait_for_effects,
)


@pytest.fixture
async def bus(
    settings: PlatformSettings, scratch_dsn: str, scratch_topic: str
) -> AsyncIterator[None]:
    async with running_consumer(
        settings, scratch_dsn, scratch_topic, f"{scratch_topic}.consumer", with_relay=True
    ):
        yield


async def test_outbox_events_take_effect_exactly_once_and_in_order_per_key(
    conn: asyncpg.Connection, scratch_topic: str, bus: None
) -> None:
    keys, seqs = probe_keys_and_seqs(1000, keys=25)
    await queue_probes(conn, scratch_topic, probe_envelopes(keys, seqs))

    assert await wait_for_effects(conn, 1000, timeout=60) == 1000
    rows, distinct, disordered = await effects_exactly_once_in_order(conn)
    assert (rows, distinct, disordered) == (1000, 1000, [])


async def test_sent_rows_leave_the_outbox(
    conn: asyncpg.Connection, scratch_topic: str, bus: None
) -> None:
    keys, seqs = probe_keys_and_seqs(50, keys=5)
    await queue_probes(conn, scratch_topic, probe_envelopes(keys, seqs))
    assert await wait_for_effects(conn, 50, timeout=30) == 50
    for _ in range(50):
        if await conn.fetchval("SELECT count(*) FROM bus_outbox") == 0:
            break
        await asyncio.sleep(0.1)
    assert await conn.fetchval("SELECT count(*) FROM bus_outbox") == 0


async def test_a_rolled_back_transaction_publishes_nothing(
    conn: asyncpg.Connection, scratch_topic: str, bus: None
) -> None:
    keys, seqs = probe_keys_and_seqs(10, keys=2)
    tx = conn.transaction()
    await tx.start()
    await add_envelopes(conn, scratch_topic, probe_envelopes(keys, seqs))
    await tx.rollback()
    committed = probe_envelopes(["after"], [0])
    await queue_probes(conn, scratch_topic, committed)

    assert await wait_for_effects(conn, 1, timeout=30) == 1
    await asyncio.sleep(1.0)  # give any wrongly published probe time to show up
    assert await conn.fetchval("SELECT array_agg(key) FROM probe_effects") == ["after"]


async def test_redelivered_events_do_not_repeat_their_effect(
    settings: PlatformSettings, conn: asyncpg.Connection, scratch_dsn: str, scratch_topic: str
) -> None:
    keys, seqs = probe_keys_and_seqs(20, keys=4)
    envelopes = probe_envelopes(keys, seqs)
    await queue_probes(conn, scratch_topic, envelopes)
    async with running_consumer(
        settings, scratch_dsn, scratch_topic, f"{scratch_topic}.consumer", with_relay=True
    ):
        assert await wait_for_effects(conn, 20, timeout=30) == 20
    # The same events again (a relay that died before deleting its rows does this).
    await queue_probes(conn, scratch_topic, envelopes)
    async with running_consumer(
        settings, scratch_dsn, scratch_topic, f"{scratch_topic}.consumer", with_relay=True
    ):
        assert await _outbox_drained(conn, timeout=30)  # the duplicates are on Kafka
        # Then a new event on each key: on its key's partition after the duplicates, so
        # its effect shows the consumer has read them all.
        last = {k: s for k, s in zip(keys, seqs, strict=True)}
        sentinels = sorted(last)
        await queue_probes(
            conn, scratch_topic, probe_envelopes(sentinels, [last[k] + 1 for k in sentinels])
        )
        assert await wait_for_effects(conn, 24, timeout=30) == 24
    rows, distinct, disordered = await effects_exactly_once_in_order(conn)
    assert (rows, distinct, disordered) == (24, 24, [])


async def _outbox_drained(conn: asyncpg.Connection, timeout: float) -> bool:
    deadline = asyncio.get_running_loop().time() + timeout
    while await conn.fetchval("SELECT count(*) FROM bus_outbox") != 0:
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


async def test_outages_while_applying_lose_and_repeat_nothing(
    settings: PlatformSettings, conn: asyncpg.Connection, scratch_dsn: str, scratch_topic: str
) -> None:
    # Small polls, three of which fail after writing their effects (rolled back): each
    # is read again from the last commit, and nothing is applied twice or skipped.
    calls = 0

    async def applied_then_lost(c: Connection, items: Sequence[Item]) -> None:
        nonlocal calls
        calls += 1
        await record_probe_effects(c, items)  # written in the transaction...
        if calls in (3, 8, 9):
            raise ConnectionResetError("the database went away")  # ...and rolled back

    keys, seqs = probe_keys_and_seqs(300, keys=10)
    await queue_probes(conn, scratch_topic, probe_envelopes(keys, seqs))
    group = f"{scratch_topic}.outages"
    async with running_consumer(
        settings, scratch_dsn, scratch_topic, group, applied_then_lost,
        with_relay=True, max_poll_records=7,
    ):  # fmt: skip
        assert await wait_for_effects(conn, 300, timeout=60) == 300
        await asyncio.sleep(1.0)  # a repeated effect would show up by now
    assert calls > 300 // 7 + 3
    rows, distinct, disordered = await effects_exactly_once_in_order(conn)
    assert (rows, distinct, disordered) == (300, 300, [])


async def test_writing_to_the_outbox_sends_no_notification(conn: asyncpg.Connection) -> None:
    # A transaction that NOTIFYs commits only after every other notifying transaction
    # of the cluster (migrations/004_outbox_polled.sql): no trigger may put that on
    # every write that queues an event. The relay polls instead.
    triggers = await conn.fetch(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'bus_outbox'::regclass AND NOT tgisinternal"
    )
    notifying = await conn.fetch(
        "SELECT proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
        " WHERE n.nspname = 'public' AND p.prosrc ILIKE '%pg_notify%'"
    )
    assert [r["tgname"] for r in triggers] == []
    assert [r["proname"] for r in notifying] == []


async def test_the_outbox_gauges_read_the_backlog_and_its_age(
    conn: asyncpg.Connection, scratch_topic: str
) -> None:
    metrics = Metrics("bus-test")

    def gauge(name: str) -> float | None:
        return metrics.registry.get_sample_value(name)

    await metrics.refresh_outbox(conn)
    assert (gauge("outbox_backlog"), gauge("outbox_oldest_seconds")) == (0.0, 0.0)
    await add_envelopes(conn, scratch_topic, probe_envelopes(["k"] * 3, [0, 1, 2]))
    await conn.execute("UPDATE bus_outbox SET created_at = now() - interval '90 seconds'")
    await metrics.refresh_outbox(conn)
    assert gauge("outbox_backlog") == 3.0
    assert 90.0 <= (gauge("outbox_oldest_seconds") or 0.0) < 120.0
