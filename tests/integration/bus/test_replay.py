"""A dead letter, once its cause is fixed, is replayed and takes effect exactly once."""

import asyncio
from collections.abc import Sequence

import asyncpg
import pytest

from shared.bus import Delivery, Unprocessable, reliable_producer
from shared.bus.consumer import Item
from shared.bus.replay import NotADeadLetterTopic, replay_dead_letters
from shared.bus.selftest import probe_envelopes, record_probe_effects
from shared.config import PlatformSettings
from shared.db import Connection
from shared.events import encode_envelope
from shared.events.topics import dlq_of
from tests.support.bus import running_consumer
from tests.support.probes import wait_for_effects


async def test_replayed_dead_letters_take_effect_once_the_cause_is_fixed(
    settings: PlatformSettings, conn: asyncpg.Connection, scratch_dsn: str, scratch_topic: str
) -> None:
    repair_known = asyncio.Event()

    async def needs_the_repair(c: Connection, items: Sequence[Item]) -> None:
        for item in items:
            seq = getattr(item.event, "seq", 0) if isinstance(item, Delivery) else 0
            if seq == 1 and not repair_known.is_set():
                raise Unprocessable("repair not known yet")
        await record_probe_effects(c, items)

    producer = reliable_producer(settings)
    await producer.start()
    group = f"{scratch_topic}.r"
    try:
        async with running_consumer(
            settings, scratch_dsn, scratch_topic, group, needs_the_repair
        ) as c:
            for envelope in probe_envelopes(["k", "k", "k"], [0, 1, 2]):
                await producer.send_and_wait(scratch_topic, encode_envelope(envelope), key=b"k")
            assert await wait_for_effects(conn, 2, timeout=30) == 2
            for _ in range(100):
                if c.dead_lettered:
                    break
                await asyncio.sleep(0.1)

            repair_known.set()
            replayed = await replay_dead_letters(settings, dlq_of(scratch_topic))
            assert await wait_for_effects(conn, 3, timeout=30) == 3
            again = await replay_dead_letters(settings, dlq_of(scratch_topic))
    finally:
        await producer.stop()

    assert [r["to"] for r in replayed] == [scratch_topic]
    assert "repair not known yet" in replayed[0]["reason"]
    assert again == []  # the replayer remembers where it stopped
    assert sorted(await conn.fetchval("SELECT array_agg(seq) FROM probe_effects")) == [0, 1, 2]


async def test_only_dead_letter_topics_can_be_replayed(settings: PlatformSettings) -> None:
    with pytest.raises(NotADeadLetterTopic):
        await replay_dead_letters(settings, "accounts.lifecycle")
