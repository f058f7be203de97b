"""The idempotent consumer: at-least-once delivery, exactly-once effect.

For each poll (several partitions, each partition's records in order):

1. records that cannot be read go to the DLQ with the reason (acknowledged first);
2. in one transaction, the new event ids are marked processed and the handler applies
   their effects, so a redelivered event finds its mark and is skipped;
3. the offset is committed to Kafka only after that transaction committed.

A handler error rolls the batch back and the events are retried one by one; an event
that keeps failing for a reason that is not an outage is dead-lettered, so one bad
event cannot stop the partition. Outages (database or Kafka unreachable) are retried
with back-off and never dead-letter anything.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from shared.bus.dead_letters import dead_letter
from shared.bus.delivery import Delivery, Rejected, Tombstone, read_record
from shared.bus.faults import crash_point
from shared.bus.idempotency import mark_processed
from shared.db.pool import Connection

log = logging.getLogger(__name__)

Item = Delivery | Tombstone
Handler = Callable[[Connection, Sequence[Item]], Awaitable[None]]
OUTAGES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    # The server shutting down, restarting or not yet accepting connections (57P01-03):
    # an outage to wait out, not a reason to dead-letter the event being handled.
    asyncpg.OperatorInterventionError,
    # None of these is the event's fault: a deadlock or serialization failure (40xxx)
    # passes on a retry; a read-only server (25006) is a fail-over under way; too many
    # connections, a full disk or memory (53xxx) is the server's state.
    asyncpg.TransactionRollbackError,
    asyncpg.ReadOnlySQLTransactionError,
    asyncpg.InsufficientResourcesError,
    KafkaError,
)


class Unprocessable(Exception):
    """Raised by a handler for an event that can never be applied (dead-letter it)."""


@dataclass(frozen=True)
class ConsumerSettings:
    max_attempts: int = 3
    poll_timeout_ms: int = 500
    backoff_seconds: float = 0.2
    backoff_max_seconds: float = 10.0


class IdempotentConsumer:
    """Applies a handler to every event of some topics, exactly once in effect."""

    def __init__(
        self,
        name: str,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        pool: asyncpg.Pool,
        handler: Handler,
        settings: ConsumerSettings | None = None,
    ) -> None:
        self.name = name
        self._consumer = consumer
        self._producer = producer
        self._pool = pool
        self._handler = handler
        self._settings = settings or ConsumerSettings()
        self._stopping = asyncio.Event()
        self._to_rewind: set[TopicPartition] = set()
        self.applied = 0
        self.dead_lettered = 0

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Consume until :meth:`stop`; outages are waited out, never skipped."""
        failures = 0
        while not self._stopping.is_set():
            try:
                await self._rewind_pending()
                await self.poll_once()
                failures = 0
            except OUTAGES as exc:
                failures += 1
                await self._back_off(failures, exc)

    async def poll_once(self) -> int:
        """Handle one poll's worth of records; return how many records were read."""
        batches = await self._consumer.getmany(timeout_ms=self._settings.poll_timeout_ms)
        if not batches:
            return 0
        # Until the offsets are committed, these records must be read again after a
        # failure, not skipped from where the poll got to.
        self._to_rewind.update(batches)
        records = [r for part in batches.values() for r in part]
        await self._handle(records)
        crash_point("consumer.after_effects")
        await self._consumer.commit({tp: r[-1].offset + 1 for tp, r in batches.items()})
        self._to_rewind.difference_update(batches)
        return len(records)

    async def _handle(self, records: Sequence[ConsumerRecord]) -> None:
        """Records of several partitions, each partition's in order, in one transaction."""
        items: list[Item] = []
        for record in records:
            read = read_record(
                record.value, record.key, record.topic, record.partition, record.offset
            )
            if isinstance(read, Rejected):
                await self._dead_letter(record, read.reason)
            else:
                items.append(read)
        if not items:
            return
        try:
            await self._apply(items)
        except OUTAGES:
            raise
        except Exception:
            log.warning("%s: batch failed, retrying its events one by one", self.name)
            for item in items:
                await self._apply_alone(item, records)

    async def _apply(self, items: Sequence[Item]) -> None:
        async with self._pool.acquire() as conn, conn.transaction():
            deliveries = [i for i in items if isinstance(i, Delivery)]
            new_ids = await mark_processed(conn, self.name, [d.envelope.id for d in deliveries])
            fresh = _first_occurrences(items, new_ids)
            if fresh:
                await self._handler(conn, fresh)
        self.applied += len(fresh)

    async def _apply_alone(self, item: Item, records: Sequence[ConsumerRecord]) -> None:
        for attempt in range(1, self._settings.max_attempts + 1):
            try:
                await self._apply([item])
                return
            except OUTAGES:
                raise
            except Unprocessable as exc:
                reason = f"unprocessable: {exc}"
                break
            except Exception as exc:
                reason = f"handler failed {attempt} times: {type(exc).__name__}: {exc}"
                await asyncio.sleep(self._settings.backoff_seconds * attempt)
        record = next(
            r for r in records if (r.partition, r.offset) == (item.partition, item.offset)
        )
        await self._dead_letter(record, reason)

    async def _dead_letter(self, record: ConsumerRecord, reason: str) -> None:
        log.warning(
            "%s: dead-lettering %s[%d]@%d: %s",
            self.name,
            record.topic,
            record.partition,
            record.offset,
            reason,
        )
        await dead_letter(self._producer, record, list(record.headers or ()), reason, self.name)
        self.dead_lettered += 1

    async def _rewind_pending(self) -> None:
        for tp in list(self._to_rewind):
            if tp in self._consumer.assignment():
                committed = await self._consumer.committed(tp)
                if committed is None:
                    await self._consumer.seek_to_beginning(tp)
                else:
                    self._consumer.seek(tp, committed)
            self._to_rewind.discard(tp)

    async def _back_off(self, failures: int, exc: BaseException) -> None:
        delay = min(
            self._settings.backoff_max_seconds, self._settings.backoff_seconds * 2**failures
        )
        delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not security
        log.warning("%s: outage (%s), retrying in %.1fs", self.name, type(exc).__name__, delay)
        await asyncio.sleep(delay)


def _first_occurrences(items: Sequence[Item], new_ids: set[UUID]) -> list[Item]:
    """Items to apply: tombstones always, each new event id once, in order."""
    fresh: list[Item] = []
    for item in items:
        if isinstance(item, Tombstone):
            fresh.append(item)
        elif item.envelope.id in new_ids:
            new_ids.discard(item.envelope.id)
            fresh.append(item)
    return fresh
