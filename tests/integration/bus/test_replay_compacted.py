"""Dead letters of a compacted topic go back only while they are still their key's latest
record there: one tombstoned since (an erased account's contact card), gone, or followed
by a newer record is skipped, never put back as the key's record for good. Real Kafka."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import TopicPartition
from aiokafka.admin import NewTopic

from shared.bus import reliable_producer
from shared.bus.dead_letters import dead_letter
from shared.bus.kafka_options import log_reader, seek_to_start
from shared.bus.replay import replay_dead_letters
from shared.bus.scratch import created_topics
from shared.config import PlatformSettings
from shared.events.topics import ACCOUNTS_CONTACTS, dlq_of


@pytest.fixture
async def compacted_topic(settings: PlatformSettings) -> AsyncIterator[str]:
    """A fresh topic with the contact cards' settings (compacted, kept for ever), and
    its DLQ; deleted after the test."""
    name = f"bus.selftest.compacted.{uuid.uuid4().hex[:12]}"
    topics = [
        NewTopic(name, 2, 1, topic_configs=ACCOUNTS_CONTACTS.config()),
        NewTopic(dlq_of(name), 1, 1),
    ]
    async with created_topics(settings, topics):
        yield name


async def _consumed(settings: PlatformSettings, topic: str) -> list[Any]:
    """Every record on ``topic`` (two partitions), in order per partition."""
    reader = log_reader(settings)
    await reader.start()
    try:
        partitions = [TopicPartition(topic, p) for p in (0, 1)]
        reader.assign(partitions)
        await seek_to_start(reader, partitions)
        ends = await reader.end_offsets(partitions)
        out: list[Any] = []
        while [tp for tp, end in ends.items() if await reader.position(tp) < end]:
            for records in (await reader.getmany(timeout_ms=1000)).values():
                out.extend(records)
        return out
    finally:
        await reader.stop()


async def _records(settings: PlatformSettings, topic: str) -> list[tuple[bytes, bytes | None]]:
    """Every (key, value) on ``topic``, in order per partition."""
    return [(r.key, r.value) for r in await _consumed(settings, topic)]


def _latest(records: list[tuple[bytes, bytes | None]]) -> dict[bytes, bytes | None]:
    return dict(records)  # a key stays in one partition: its last record is its latest


async def test_only_dead_letters_still_latest_on_a_compacted_topic_go_back(
    settings: PlatformSettings, compacted_topic: str
) -> None:
    topic = compacted_topic
    erased, kept, changed, gone = b"erased-user", b"kept-user", b"changed-user", b"gone-user"
    cards = (erased, kept, changed)
    producer = reliable_producer(settings)
    await producer.start()
    try:
        for key in cards:
            await producer.send_and_wait(topic, b"card of " + key, key=key)
        # A consumer could not handle these cards: dead-lettered, original bytes kept.
        on_topic = {r.key: r for r in await _consumed(settings, topic)}
        for key in cards:
            await dead_letter(producer, on_topic[key], [], "a bug, fixed since", "test")
        # Since then: an account erased (its card tombstoned), a card changed, and one
        # key gone altogether (its tombstone compacted away: here a dead letter of a key
        # the topic no longer holds, from before the source was named in dead letters).
        await producer.send_and_wait(topic, None, key=erased)
        await producer.send_and_wait(topic, b"newer card of " + changed, key=changed)
        await producer.send_and_wait(dlq_of(topic), b"card of " + gone, key=gone)
    finally:
        await producer.stop()

    listed = await replay_dead_letters(settings, dlq_of(topic), dry_run=True)
    replayed = await replay_dead_letters(settings, dlq_of(topic))
    again = await replay_dead_letters(settings, dlq_of(topic))

    assert listed == replayed
    why = {line["offset"]: line.get("skipped") for line in replayed}
    assert list(why.values()) == [
        f"its key was tombstoned on {topic} since",
        None,
        f"a newer record of its key is on {topic}",
        f"its key is gone from {topic} (tombstoned, then compacted away)",
    ]
    assert again == []  # skipped ones are done with too

    latest = _latest(await _records(settings, topic))
    assert latest[erased] is None  # still tombstoned: the card did not come back
    assert latest[changed] == b"newer card of " + changed
    assert latest[kept] == b"card of " + kept
    assert gone not in latest
    keys = [k for k, _ in await _records(settings, topic)]
    assert keys.count(kept) == 2  # the card, and its copy replayed
    assert keys.count(erased) == 2  # the card and its tombstone only
    assert keys.count(changed) == 2  # the card and its newer one only


async def test_a_dead_lettered_tombstone_always_goes_back(
    settings: PlatformSettings, compacted_topic: str
) -> None:
    """A consumer that failed on a tombstone still owes its erasure: the tombstone is the
    key's latest record (or compacted away), and goes back all the same."""
    topic, key = compacted_topic, b"erased-user"
    producer = reliable_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(topic, b"card of " + key, key=key)
        await producer.send_and_wait(topic, None, key=key)
        tombstone = next(r for r in await _consumed(settings, topic) if r.value is None)
        await dead_letter(producer, tombstone, [], "the erasure failed, fixed since", "test")
    finally:
        await producer.stop()

    replayed = await replay_dead_letters(settings, dlq_of(topic))

    assert [line.get("skipped") for line in replayed] == [None]
    assert [v for k, v in await _records(settings, topic) if k == key] == [
        b"card of " + key,
        None,
        None,
    ]


async def test_dead_letters_of_other_topics_go_back_whatever_followed(
    settings: PlatformSettings, scratch_topic: str
) -> None:
    """Events, not states: on a topic that is not compacted, a later record of the same
    key supersedes nothing, and every dead letter goes back as before."""
    producer = reliable_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(
            dlq_of(scratch_topic),
            b"first",
            key=b"k",
            headers=[("dlq_source_topic", scratch_topic.encode())],
        )
        await producer.send_and_wait(scratch_topic, b"second", key=b"k")
    finally:
        await producer.stop()
    replayed = await replay_dead_letters(settings, dlq_of(scratch_topic))
    assert [(line["to"], line.get("skipped")) for line in replayed] == [(scratch_topic, None)]
