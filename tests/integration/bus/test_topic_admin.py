"""Creating the registry's topics: a topic with fewer partitions than registered is
refused, never grown (its keys would move to other partitions); an existing topic's
settings are brought back to the registry's, keeping tuning the registry does not manage."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from shared.bus.kafka_options import client_options
from shared.bus.scratch import scratch_topic
from shared.bus.topic_admin import TopicCreationFailed, ensure_topics
from shared.config import PlatformSettings
from shared.events.topics import Topic

DAY_MS = 24 * 3600 * 1000


@pytest.fixture
async def admin(settings: PlatformSettings) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(**client_options(settings))
    await client.start()
    try:
        yield client
    finally:
        await client.close()


async def _partitions(admin: AIOKafkaAdminClient, name: str) -> int:
    (described,) = await admin.describe_topics([name])
    return len(described["partitions"])


async def _settings(admin: AIOKafkaAdminClient, name: str) -> dict[str, str]:
    """The topic's effective settings (its own, else the broker's defaults)."""
    (response,) = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, name)])
    ((_code, _message, _type, _name, entries),) = response.resources
    return {e[0]: e[1] for e in entries}


async def _set_by_hand(admin: AIOKafkaAdminClient, name: str, config: dict[str, str]) -> None:
    (response,) = await admin.alter_configs(
        [ConfigResource(ConfigResourceType.TOPIC, name, config)]
    )
    assert [r[0] for r in response.resources] == [0]


async def test_a_topic_short_of_partitions_is_reported_not_grown(
    settings: PlatformSettings, admin: AIOKafkaAdminClient
) -> None:
    async with scratch_topic(settings, 1) as name:
        report = await ensure_topics(settings, [Topic(name, "as registered", partitions=1)])
        assert report.created == []
        with pytest.raises(TopicCreationFailed, match=f"{name} has 1 partition"):
            await ensure_topics(settings, [Topic(name, "registered with more", partitions=3)])
        assert await _partitions(admin, name) == 1


async def test_a_retention_lengthened_by_hand_goes_back_to_the_registrys(
    settings: PlatformSettings, admin: AIOKafkaAdminClient
) -> None:
    """A topic keeping records a year where the registry (and the docs an auditor reads)
    says seven days is altered back at the next start; an operator's tuning of a setting
    the registry does not manage stays."""
    async with scratch_topic(settings, 1) as name:
        topic = Topic(name, "as registered", partitions=1, retention_ms=7 * DAY_MS)
        # Created with bus.selftest's retention: brought to this registration's at once.
        assert (await ensure_topics(settings, [topic])).reconciled == [name]
        await _set_by_hand(
            admin, name, {"retention.ms": str(365 * DAY_MS), "max.message.bytes": "2097152"}
        )
        assert (await _settings(admin, name))["retention.ms"] == str(365 * DAY_MS)

        assert (await ensure_topics(settings, [topic])).reconciled == [name]
        after = await _settings(admin, name)
        assert after["retention.ms"] == str(7 * DAY_MS)
        assert after["max.message.bytes"] == "2097152"
        assert after["min.insync.replicas"] == "1"
        # Settled: the next start changes nothing.
        assert (await ensure_topics(settings, [topic])).reconciled == []


async def test_a_topic_compacted_then_registered_as_not_loses_its_compaction(
    settings: PlatformSettings, admin: AIOKafkaAdminClient
) -> None:
    async with scratch_topic(settings, 1) as name:
        compacted = Topic(name, "compacted", partitions=1, compacted=True)
        await ensure_topics(settings, [compacted])
        assert (await _settings(admin, name))["cleanup.policy"] == "compact"
        assert (await ensure_topics(settings, [compacted])).reconciled == []

        plain = Topic(name, "no longer compacted", partitions=1)
        assert (await ensure_topics(settings, [plain])).reconciled == [name]
        after = await _settings(admin, name)
        assert after["cleanup.policy"] == "delete"
        assert after["retention.ms"] == plain.config()["retention.ms"]
        assert after["max.compaction.lag.ms"] != "3600000"


async def test_a_topic_waiting_for_fewer_copies_than_registered_is_raised(
    settings: PlatformSettings, admin: AIOKafkaAdminClient
) -> None:
    """Created for one broker (min.insync.replicas 1), then set up for three copies: the
    registry's topic waits for two, so acks=all on this one is made to wait for two."""
    async with scratch_topic(settings, 1) as name:
        topic = Topic(name, "as registered", partitions=1)
        await ensure_topics(settings, [topic], replication_factor=1)
        assert (await _settings(admin, name))["min.insync.replicas"] == "1"
        assert (await ensure_topics(settings, [topic], replication_factor=3)).reconciled == [name]
        assert (await _settings(admin, name))["min.insync.replicas"] == "2"
