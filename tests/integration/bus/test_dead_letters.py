"""Poison records go to <topic>.dlq with their reason while the consumer goes on."""

import asyncio
from collections.abc import Sequence
from uuid import uuid4

import asyncpg
from aiokafka import AIOKafkaProducer, ConsumerRecord, TopicPartition

from shared.bus import Delivery, Unprocessable, manual_commit_consumer, reliable_producer
from shared.bus.consumer import Item
from shared.bus.dead_letters import H_REASON, H_SOURCE_OFFSET, H_SOURCE_TOPIC
from shared.bus.kafka_options import log_reader, seek_to_start
from shared.bus.scratch import scratch_topic as new_scratch_topic
from shared.bus.selftest import probe_envelopes, record_probe_effects
from shared.config import PlatformSettings
from shared.db import Connection
from shared.events import encode_envelope, envelope_for
from shared.events.catalogue.accounts import UserRegistered
from shared.events.topics import BUS_SELFTEST, dlq_of
from tests.support.bus import running_consumer
from tests.support.probes import read_all, spawn_selftest, wait_for_effects
from tests.support.processes import end

_HEAD = b'{"specversion":"1.0","source":"x",'
POISON = {
    b"{this is not json": "not JSON",
    _HEAD + b'"type":"user.teleported.v1","data":{}}': "unknown event type",
    _HEAD + b'"type":"bus_probe.recorded.v1","data":{"key":"k"}}': "data invalid",
}


async def _publish_good_and_poison(producer: AIOKafkaProducer, topic: str) -> list[bytes]:
    """good, poison, good, poison, ... all on one key so their order is fixed."""
    goods = [encode_envelope(e) for e in probe_envelopes(["k"] * 4, [0, 1, 2, 3])]
    wrong_topic = encode_envelope(
        envelope_for(UserRegistered(user_id=uuid4(), age_band="adult"), source="x", subject="k")
    )
    poison = [*POISON, wrong_topic]
    for value in [v for pair in zip(goods, poison, strict=True) for v in pair]:
        await producer.send_and_wait(topic, value=value, key=b"k", headers=[("trace", b"t1")])
    return poison


async def _check_dead_letters(settings: PlatformSettings, topic: str, poison: list[bytes]) -> None:
    letters = await read_all(settings, dlq_of(topic), expected=len(poison))
    assert [r.value for r in letters] == poison  # type: ignore[attr-defined]
    reasons = [dict(r.headers)[H_REASON].decode() for r in letters]  # type: ignore[attr-defined]
    for reason, expected in zip(reasons, [*POISON.values(), "does not belong"], strict=True):
        assert expected in reason
    for record in letters:
        headers = dict(record.headers)  # type: ignore[attr-defined]
        assert headers[H_SOURCE_TOPIC] == topic.encode()
        assert headers["trace"] == b"t1"
        assert int(headers[H_SOURCE_OFFSET]) >= 0


async def test_idempotent_consumer_dead_letters_poison_and_goes_on(
    settings: PlatformSettings, conn: asyncpg.Connection, scratch_dsn: str, scratch_topic: str
) -> None:
    producer = reliable_producer(settings)
    await producer.start()
    try:
        async with running_consumer(
            settings, scratch_dsn, scratch_topic, f"{scratch_topic}.d"
        ) as c:
            poison = await _publish_good_and_poison(producer, scratch_topic)
            assert await wait_for_effects(conn, 4, timeout=30) == 4
            await _check_dead_letters(settings, scratch_topic, poison)
    finally:
        await producer.stop()
    assert c.dead_lettered == len(poison)


async def _read_to_end(
    settings: PlatformSettings, topic: str, timeout: float = 30.0
) -> list[ConsumerRecord[bytes, bytes]]:
    """Every record of ``topic``, from its start to the end offsets it has now."""
    consumer = log_reader(settings)
    await consumer.start()
    records: list[ConsumerRecord[bytes, bytes]] = []
    try:
        async with asyncio.timeout(timeout):
            consumer.subscribe([topic])  # no group: every partition, once metadata came
            while True:
                if consumer.assignment():
                    break
                await asyncio.sleep(0.1)
            partitions = sorted(consumer.assignment())
            await seek_to_start(consumer, partitions)
            ends = await consumer.end_offsets(partitions)
            left = {tp for tp in partitions if await consumer.position(tp) < ends[tp]}
            while left:
                batches = await consumer.getmany(*left, timeout_ms=500)
                for part in batches.values():
                    records.extend(part)
                left = {tp for tp in left if await consumer.position(tp) < ends[tp]}
    finally:
        await consumer.stop()
    return records


async def _forget_commits(settings: PlatformSettings, topic: str, group: str) -> None:
    """Commit offset 0 for every partition: as if the group had never committed."""
    consumer = manual_commit_consumer(settings, group_id=group)
    await consumer.start()
    try:
        partitions = [TopicPartition(topic, p) for p in range(BUS_SELFTEST.partitions)]
        consumer.assign(partitions)
        await consumer.commit({tp: 0 for tp in partitions})
    finally:
        await consumer.stop()


async def test_poison_read_again_is_not_dead_lettered_twice(
    settings: PlatformSettings, conn: asyncpg.Connection, scratch_dsn: str, scratch_topic: str
) -> None:
    """Records are read again when their offsets were not committed (a crash, an outage):
    the poison among them was dead-lettered already, and is not sent again."""
    group = f"{scratch_topic}.again"
    producer = reliable_producer(settings)
    await producer.start()
    try:
        poison = await _publish_good_and_poison(producer, scratch_topic)
        async with running_consumer(settings, scratch_dsn, scratch_topic, group):
            assert await wait_for_effects(conn, 4, timeout=30) == 4
            await _check_dead_letters(settings, scratch_topic, poison)
        await _forget_commits(settings, scratch_topic, group)
        [last] = probe_envelopes(["k"], [4])  # on the same partition, after the poison
        await producer.send_and_wait(scratch_topic, encode_envelope(last), key=b"k")
        async with running_consumer(settings, scratch_dsn, scratch_topic, group) as again:
            assert await wait_for_effects(conn, 5, timeout=30) == 5
    finally:
        await producer.stop()
    assert again.dead_lettered == 0
    # Every dead letter was acknowledged before the consumers stopped: the DLQ up to its
    # end now holds them all, and the poison only once.
    letters = await _read_to_end(settings, dlq_of(scratch_topic))
    assert [r.value for r in letters] == poison


async def test_an_event_its_handler_cannot_apply_is_dead_lettered_alone(
    settings: PlatformSettings, conn: asyncpg.Connection, scratch_dsn: str, scratch_topic: str
) -> None:
    async def refuse_seq_2(c: Connection, items: Sequence[Item]) -> None:
        if any(isinstance(i, Delivery) and getattr(i.event, "seq", None) == 2 for i in items):
            raise Unprocessable("seq 2 refers to a repair that does not exist")
        await record_probe_effects(c, items)

    producer = reliable_producer(settings)
    await producer.start()
    try:
        for envelope in probe_envelopes(["k"] * 5, [0, 1, 2, 3, 4]):
            await producer.send_and_wait(scratch_topic, encode_envelope(envelope), key=b"k")
        group = f"{scratch_topic}.h"
        async with running_consumer(settings, scratch_dsn, scratch_topic, group, refuse_seq_2):
            assert await wait_for_effects(conn, 4, timeout=30) == 4
            letters = await read_all(settings, dlq_of(scratch_topic), expected=1)
    finally:
        await producer.stop()
    assert sorted(await conn.fetchval("SELECT array_agg(seq) FROM probe_effects")) == [0, 1, 3, 4]
    assert len(letters) == 1
    assert b"unprocessable: seq 2" in dict(letters[0].headers)[H_REASON]  # type: ignore[attr-defined]


async def test_a_consumer_of_two_topics_dead_letters_the_record_that_failed(
    settings: PlatformSettings, conn: asyncpg.Connection, scratch_dsn: str
) -> None:
    """Two topics' partitions and offsets overlap (each has a partition 0 with an offset
    1): the letter holds the failing record's own bytes, in its own topic's DLQ."""

    async def refuse_1_and_11(c: Connection, items: Sequence[Item]) -> None:
        if any(isinstance(i, Delivery) and getattr(i.event, "seq", None) in (1, 11) for i in items):
            raise Unprocessable("refused")
        await record_probe_effects(c, items)

    producer = reliable_producer(settings)
    await producer.start()
    try:
        async with (
            new_scratch_topic(settings, 1) as first,
            new_scratch_topic(settings, 1) as second,
        ):
            sent: dict[str, list[bytes]] = {first: [], second: []}
            for topic, seqs in ((first, [0, 1, 2]), (second, [10, 11, 12])):
                for envelope in probe_envelopes(["k"] * 3, seqs):
                    sent[topic].append(encode_envelope(envelope))
                    await producer.send_and_wait(topic, sent[topic][-1], key=b"k", partition=0)
            group = f"{first}.two"
            async with running_consumer(
                settings, scratch_dsn, first, group, refuse_1_and_11, also=[second]
            ):
                assert await wait_for_effects(conn, 4, timeout=30) == 4
                letters = {t: await read_all(settings, dlq_of(t), expected=1) for t in sent}
    finally:
        await producer.stop()
    assert sorted(await conn.fetchval("SELECT array_agg(seq) FROM probe_effects")) == [0, 2, 10, 12]
    for topic, records in letters.items():
        assert [r.value for r in records] == [sent[topic][1]]  # type: ignore[attr-defined]
        headers = dict(records[0].headers)  # type: ignore[attr-defined]
        assert headers[H_SOURCE_TOPIC] == topic.encode()
        assert headers[H_SOURCE_OFFSET] == b"1"


async def test_faust_agent_reads_through_the_codec_and_dead_letters_poison(
    settings: PlatformSettings, conn: asyncpg.Connection, scratch_dsn: str, scratch_topic: str
) -> None:
    producer = reliable_producer(settings)
    await producer.start()
    worker = spawn_selftest(
        "faust", scratch_dsn, "--topic", scratch_topic, "--group", f"{scratch_topic}.faust"
    )
    try:
        poison = await _publish_good_and_poison(producer, scratch_topic)
        assert await wait_for_effects(conn, 4, timeout=90, worker=worker) == 4
        await _check_dead_letters(settings, scratch_topic, poison)
    finally:
        end(worker, grace_seconds=30)  # SIGKILL if it outlives the grace
        await producer.stop()
    rows = await conn.fetchval("SELECT count(*) FROM probe_effects")
    assert rows == 4


async def test_a_record_at_kafkas_size_limit_is_dead_lettered_whole(
    settings: PlatformSettings, conn: asyncpg.Connection, scratch_dsn: str, scratch_topic: str
) -> None:
    """A record just under Kafka's limit, with the dead-letter facts added, weighs more
    than a producer sends by default: the letter was refused before it left, taken for
    an outage, and tried again for good, the partition stopped behind it."""
    huge = b"{" + b"x" * (1_048_400 - 1)  # not JSON
    [after] = probe_envelopes(["k"], [0])
    producer = reliable_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(scratch_topic, huge, key=b"k", headers=[("trace", b"t1")])
        await producer.send_and_wait(scratch_topic, encode_envelope(after), key=b"k")
        group = f"{scratch_topic}.huge"
        async with running_consumer(settings, scratch_dsn, scratch_topic, group) as c:
            assert await wait_for_effects(conn, 1, timeout=30) == 1  # the one after it
            [letter] = await read_all(settings, dlq_of(scratch_topic), expected=1)
    finally:
        await producer.stop()
    assert c.dead_lettered == 1
    assert letter.value == huge  # type: ignore[attr-defined]
    assert b"not JSON" in dict(letter.headers)[H_REASON]  # type: ignore[attr-defined]
