"""A rewind that races a rebalance does not seek to a committed offset read before it."""

from __future__ import annotations

import asyncio
from typing import Any, cast

from aiokafka import TopicPartition

from shared.bus.consumer import IdempotentConsumer

TP = TopicPartition("t", 0)


class _Consumer:
    """What the rewind touches of an aiokafka consumer: the partition stays assigned
    (an eager rebalance revokes it and gives it back), and ``committed`` waits until
    told, so a revocation can run while it is asked."""

    def __init__(self) -> None:
        self.offsets = {TP: 10}
        self.asked = asyncio.Event()
        self.answer = asyncio.Event()
        self.seeks: list[int] = []

    def subscription(self) -> set[str]:
        return {"t"}

    def subscribe(self, topics: list[str], listener: object) -> None:
        pass

    def assignment(self) -> set[TopicPartition]:
        return {TP}

    async def committed(self, tp: TopicPartition) -> int:
        read = self.offsets[tp]  # read as the broker answers: before the hand-over's commit
        self.asked.set()
        await self.answer.wait()
        return read

    async def commit(self, positions: dict[TopicPartition, int]) -> None:
        self.offsets.update(positions)

    def seek(self, tp: TopicPartition, offset: int) -> None:
        self.seeks.append(offset)

    async def seek_to_beginning(self, tp: TopicPartition) -> None:
        self.seeks.append(0)


async def _nothing(*_: object) -> None:
    pass


async def test_a_rewind_asked_across_a_rebalance_does_not_seek_behind_its_commit() -> None:
    kafka = _Consumer()
    consumer = IdempotentConsumer(
        "c", cast(Any, kafka), cast(Any, None), cast(Any, None), cast(Any, _nothing)
    )
    consumer._to_rewind.add(TP)
    rewind = asyncio.create_task(consumer._rewind_pending())
    await kafka.asked.wait()
    # Meanwhile a rebalance: the settled position (25) is committed and forgotten, and
    # the partition comes back to this member, positioned by aiokafka at that commit.
    consumer._settled[TP] = 25
    consumer._commits.add({TP: 25})
    await consumer._hand_over({TP})
    assert kafka.offsets[TP] == 25
    kafka.answer.set()
    await rewind
    # Seeking to 10 would read 15 records again whose effects are committed (tombstones
    # among them applied again); the rebalance already put the partition at 25.
    assert all(offset >= 25 for offset in kafka.seeks), kafka.seeks
    assert not consumer._to_rewind
