"""How far a service's consumer groups are behind, read from Kafka rather than the workers.

Workers have no HTTP port, and a dead worker reports nothing about itself. Kafka knows
what matters to an operator either way: each group's committed offsets against the end
of its topics (the lag), how many members the group has (0: no worker is consuming),
and how many records wait in the dead-letter topics of what the group consumes. The
service's API reads these at each scrape of ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.protocol.admin import DescribeGroupsRequest, DescribeGroupsRequest_v2
from aiokafka.structs import OffsetAndMetadata

from shared.bus.kafka_options import client_options
from shared.config import PlatformSettings
from shared.events.topics import dlq_of
from shared.observability import Metrics


@dataclass(frozen=True)
class GroupLag:
    """One consumer group's position on one of its topics."""

    group: str
    topic: str
    lag: int  # records not yet committed by the group, over the topic's partitions
    members: int  # consumers in the group now; 0 means nothing is consuming


@dataclass(frozen=True)
class KafkaReading:
    groups: list[GroupLag]
    dead_letters: dict[str, int]  # dead-letter topic -> records it holds
    dead_letters_written: dict[str, int]  # dead-letter topic -> its end offsets summed


class GroupWatch:
    """Reads the lag of fixed consumer groups (group -> the topics it consumes)."""

    def __init__(self, settings: PlatformSettings, groups: Mapping[str, Sequence[str]]) -> None:
        self._settings = settings
        self._groups = {group: tuple(topics) for group, topics in groups.items()}
        self._admin: AIOKafkaAdminClient | None = None
        self._offsets: AIOKafkaConsumer | None = None
        # Two scrapes at once (Prometheus and a person with curl) share the clients: one
        # reading at a time, so neither opens clients the other then leaks or closes.
        self._lock = asyncio.Lock()

    async def read(self) -> KafkaReading:
        """One reading; connects on first use (a scrape must not wait at start-up)."""
        async with self._session() as (admin, offsets):
            return await self._read(admin, offsets)

    async def _read(self, admin: AIOKafkaAdminClient, offsets: AIOKafkaConsumer) -> KafkaReading:
        topics = sorted({t for ts in self._groups.values() for t in ts})
        dlqs = [dlq_of(t) for t in topics]
        partitions = await _partitions(offsets, [*topics, *dlqs])
        ends = await offsets.end_offsets(partitions) if partitions else {}
        starts = await offsets.beginning_offsets(partitions) if partitions else {}
        members = await _members(admin, list(self._groups))
        readings = []
        for group, group_topics in self._groups.items():
            committed = await admin.list_consumer_group_offsets(group)
            for topic in group_topics:
                lag = sum(
                    _unread(committed.get(tp), starts[tp], ends[tp])
                    for tp in partitions
                    if tp.topic == topic
                )
                readings.append(GroupLag(group, topic, lag, members.get(group, 0)))
        dead = {
            dlq: sum(ends[tp] - starts[tp] for tp in partitions if tp.topic == dlq) for dlq in dlqs
        }
        written = {dlq: sum(ends[tp] for tp in partitions if tp.topic == dlq) for dlq in dlqs}
        return KafkaReading(readings, dead, written)

    async def ends(self, topic: str) -> dict[TopicPartition, int]:
        """The next offset of each of ``topic``'s partitions now: a mark to wait for."""
        async with self._session() as (_admin, offsets):
            partitions = await _partitions(offsets, [topic])
            return await offsets.end_offsets(partitions) if partitions else {}

    async def behind(self, group: str, marks: Mapping[TopicPartition, int]) -> int:
        """Records before ``marks`` whose effects ``group`` has not committed (0: every
        record up to the marks is applied). Records retention removed count as read."""
        async with self._session() as (admin, offsets):
            committed = await admin.list_consumer_group_offsets(group)
            starts = await offsets.beginning_offsets(list(marks)) if marks else {}
            return sum(_unread(committed.get(tp), starts[tp], mark) for tp, mark in marks.items())

    async def report(self, metrics: Metrics) -> None:
        """Set the Kafka gauges of ``metrics`` from a new reading (on failure they keep
        their last values)."""
        reading = await self.read()
        for lag in reading.groups:
            metrics.consumer_lag.labels(lag.group, lag.topic).set(lag.lag)
            metrics.consumer_group_members.labels(lag.group).set(lag.members)
        for topic, records in reading.dead_letters.items():
            metrics.dead_letter_records.labels(topic).set(records)
        for topic, written in reading.dead_letters_written.items():
            metrics.dead_letters_written.labels(topic).set(written)

    @contextlib.asynccontextmanager
    async def _session(self) -> AsyncIterator[tuple[AIOKafkaAdminClient, AIOKafkaConsumer]]:
        """The clients, one user at a time; after a failure they reconnect at the next."""
        async with self._lock:
            try:
                yield await self._clients()
            except BaseException:
                await self.close()
                raise

    async def close(self) -> None:
        if self._offsets is not None:
            await self._offsets.stop()
            self._offsets = None
        if self._admin is not None:
            await self._admin.close()
            self._admin = None

    async def _clients(self) -> tuple[AIOKafkaAdminClient, AIOKafkaConsumer]:
        if self._admin is None or self._offsets is None:
            await self.close()
            options = client_options(self._settings)
            admin = AIOKafkaAdminClient(**options)
            offsets = AIOKafkaConsumer(**options, group_id=None, enable_auto_commit=False)
            try:
                await admin.start()
                await offsets.start()
            except BaseException:
                await admin.close()
                await offsets.stop()
                raise
            self._admin, self._offsets = admin, offsets
        return self._admin, self._offsets


def _unread(committed: OffsetAndMetadata | None, start: int, mark: int) -> int:
    """Records of a partition before ``mark`` that a group has not committed; one it
    never committed on is read from its start."""
    position = committed.offset if committed is not None and committed.offset >= 0 else -1
    return max(0, mark - max(position, start))


async def _partitions(consumer: AIOKafkaConsumer, topics: Sequence[str]) -> list[TopicPartition]:
    await consumer._client.force_metadata_update()  # topics created since the last reading
    return [
        TopicPartition(topic, p)
        for topic in topics
        for p in sorted(consumer.partitions_for_topic(topic) or ())
    ]


class _DescribeGroupsV2(DescribeGroupsRequest):  # type: ignore[misc]
    """DescribeGroups asked at version 2, whatever the broker supports.

    aiokafka 0.14 reads version 3 answers with the version 2 layout
    (``DescribeGroupsRequest_v3.RESPONSE_TYPE``), so against Kafka 4 its
    ``describe_consumer_groups`` fails or returns shifted fields. Version 2 has all we
    read (the members) and is read right.
    """

    def prepare(self, versions: dict[int, tuple[int, int]]) -> DescribeGroupsRequest_v2:
        return DescribeGroupsRequest_v2(self._groups)


async def _members(admin: AIOKafkaAdminClient, groups: list[str]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for group in groups:
        coordinator = await admin.find_coordinator(group)
        response = await admin._send_request(_DescribeGroupsV2([group]), coordinator)
        described: dict[str, Any] = response.to_object()
        for found in described["groups"]:
            # An unknown group comes back as "Dead" with no members: the default, 0.
            if found["error_code"] == 0 and found["group"] == group:
                counts[group] = len(found["members"])
    return counts
