"""Creating the registry's topics: a topic with fewer partitions than registered is
refused, never grown (its keys would move to other partitions)."""

from __future__ import annotations

import pytest
from aiokafka.admin import AIOKafkaAdminClient

from shared.bus.kafka_options import client_options
from shared.bus.scratch import scratch_topic
from shared.bus.topic_admin import TopicCreationFailed, ensure_topics
from shared.config import PlatformSettings
from shared.events.topics import Topic


async def _partitions(settings: PlatformSettings, name: str) -> int:
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        (described,) = await admin.describe_topics([name])
        return len(described["partitions"])
    finally:
        await admin.close()


async def test_a_topic_short_of_partitions_is_reported_not_grown(
    settings: PlatformSettings,
) -> None:
    async with scratch_topic(settings, 1) as name:
        assert await ensure_topics(settings, [Topic(name, "as registered", partitions=1)]) == []
        with pytest.raises(TopicCreationFailed, match=f"{name} has 1 partition"):
            await ensure_topics(settings, [Topic(name, "registered with more", partitions=3)])
        assert await _partitions(settings, name) == 1


async def test_a_topic_waiting_for_fewer_copies_than_registered_is_reported(
    settings: PlatformSettings,
) -> None:
    """Created for one broker (min.insync.replicas 1), then set up for three copies: the
    registry's topic would wait for two, so acks=all on this one is reported as weak."""
    async with scratch_topic(settings, 1) as name:
        topic = Topic(name, "as registered", partitions=1)
        assert await ensure_topics(settings, [topic], replication_factor=1) == []
        with pytest.raises(TopicCreationFailed, match=f"{name} has min.insync.replicas=1"):
            await ensure_topics(settings, [topic], replication_factor=3)
