"""Consumer-group lag, members and dead letters, read from a real Kafka (shared.bus.lag)."""

import asyncio
import uuid

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, RecordsToDelete
from aiokafka.errors import KafkaConnectionError
from prometheus_client import CollectorRegistry

from shared.bus.kafka_options import client_options, manual_commit_consumer, reliable_producer
from shared.bus.lag import GroupLag, GroupWatch
from shared.config import PlatformSettings
from shared.events import dlq_of
from shared.observability import Metrics

RECORDS = 10
COMMITTED = 4


async def _produce(settings: PlatformSettings, topic: str, count: int) -> None:
    producer = reliable_producer(settings)
    await producer.start()
    try:
        for _ in range(count):
            # One partition, so that "the first four records" is well defined.
            await producer.send_and_wait(topic, value=b"{}", partition=0)
    finally:
        await producer.stop()


def unique_name(prefix: str) -> str:
    return f"{prefix}.{uuid.uuid4().hex[:10]}"


def _by_group(readings: list[GroupLag]) -> dict[str, GroupLag]:
    return {r.group: r for r in readings}


async def test_lag_counts_uncommitted_records_and_members_count_live_consumers(
    settings: PlatformSettings, scratch_topic: str
) -> None:
    await _produce(settings, scratch_topic, RECORDS)
    await _produce(settings, dlq_of(scratch_topic), 2)
    reading_group, idle_group = unique_name("lag.reading"), unique_name("lag.idle")
    watch = GroupWatch(settings, {reading_group: [scratch_topic], idle_group: [scratch_topic]})
    consumer = manual_commit_consumer(settings, scratch_topic, group_id=reading_group)
    await consumer.start()
    try:
        offsets: list[int] = []
        while len(offsets) < COMMITTED:
            for batch in (await consumer.getmany(timeout_ms=1000, max_records=1)).values():
                offsets += [r.offset for r in batch]
        await consumer.commit({TopicPartition(scratch_topic, 0): offsets[COMMITTED - 1] + 1})
        live = await watch.read()
    finally:
        await consumer.stop()  # leaves the group
    try:
        after = await watch.read()
    finally:
        await watch.close()

    assert _by_group(live.groups)[reading_group] == GroupLag(
        reading_group, scratch_topic, RECORDS - COMMITTED, members=1
    )
    # A group that never committed starts from the beginning: all of it is lag.
    assert _by_group(live.groups)[idle_group] == GroupLag(
        idle_group, scratch_topic, RECORDS, members=0
    )
    assert _by_group(after.groups)[reading_group].members == 0
    assert _by_group(after.groups)[reading_group].lag == RECORDS - COMMITTED
    assert after.dead_letters == {dlq_of(scratch_topic): 2}


async def test_dead_letters_written_only_grow_when_retention_trims_the_topic(
    settings: PlatformSettings, scratch_topic: str
) -> None:
    """What the DeadLetters alert reads: a trimmed topic holds fewer records, but nothing
    new was written, and an increase() over the count held would say otherwise."""
    dlq = dlq_of(scratch_topic)
    await _produce(settings, dlq, 5)
    watch = GroupWatch(settings, {unique_name("lag.dlq"): [scratch_topic]})
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        before = await watch.read()
        await admin.delete_records({TopicPartition(dlq, 0): RecordsToDelete(before_offset=3)})
        trimmed = await watch.read()
        await _produce(settings, dlq, 1)
        after = await watch.read()
    finally:
        await admin.close()
        await watch.close()
    assert (before.dead_letters[dlq], before.dead_letters_written[dlq]) == (5, 5)
    assert (trimmed.dead_letters[dlq], trimmed.dead_letters_written[dlq]) == (2, 5)
    assert (after.dead_letters[dlq], after.dead_letters_written[dlq]) == (3, 6)


async def test_report_sets_the_gauges_and_a_failed_reading_keeps_them(
    settings: PlatformSettings, scratch_topic: str
) -> None:
    await _produce(settings, scratch_topic, 3)
    group = unique_name("lag.report")
    metrics = Metrics("lag-test", CollectorRegistry())
    watch = GroupWatch(settings, {group: [scratch_topic]})
    try:
        await watch.report(metrics)
    finally:
        await watch.close()
    sample = metrics.registry.get_sample_value
    assert sample("consumer_lag", {"group": group, "topic": scratch_topic}) == 3
    assert sample("consumer_group_members", {"group": group}) == 0
    assert sample("dead_letter_records", {"topic": dlq_of(scratch_topic)}) == 0
    assert sample("dead_letters_written", {"topic": dlq_of(scratch_topic)}) == 0

    unreachable = settings.model_copy(update={"kafka_bootstrap": "127.0.0.1:1"})
    broken = GroupWatch(unreachable, {group: [scratch_topic]})
    with pytest.raises(KafkaConnectionError):
        await broken.report(metrics)
    assert sample("consumer_lag", {"group": group, "topic": scratch_topic}) == 3


async def test_scrapes_at_once_share_one_pair_of_clients(
    settings: PlatformSettings, scratch_topic: str
) -> None:
    metrics = Metrics("lag-test", CollectorRegistry())
    watch = GroupWatch(settings, {unique_name("lag.concurrent"): [scratch_topic]})
    opened = []
    real_clients = watch._clients

    async def counting_clients() -> object:
        clients = await real_clients()
        opened.append(clients)
        return clients

    watch._clients = counting_clients  # type: ignore[method-assign,assignment]
    try:
        await asyncio.gather(*(watch.report(metrics) for _ in range(4)))
    finally:
        await watch.close()
    assert len(opened) == 4
    assert len({id(pair[0]) for pair in opened}) == 1  # the first reading's, reused
