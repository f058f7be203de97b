"""The idempotent consumer: at-least-once delivery, exactly-once effect.

For each poll (several partitions, each partition's records in order):

1. records that cannot be read go to the DLQ with the reason (acknowledged first);
2. in one transaction, the new event ids are marked processed and the handler applies
   their effects, so a redelivered event finds its mark and is skipped;
3. the offset is committed to Kafka only after that transaction committed, in the
   background while the next poll is handled (one commit at a time): a commit that is
   late or lost only means records read again, and their marks skip them.

A rebalance waits for the poll being applied, commits what is applied, and drops the
poll read ahead (see :meth:`IdempotentConsumer._hand_over`): a partition's next owner
starts where this one's effects end, so no two members apply a partition at once.
Tombstones carry no id to mark: one read again (after a crash before its offset's
commit, or an outage while a failed batch is retried one by one) is applied again, so a
tombstone handler must be idempotent and must not undo a later record of its key (the
notifier's ignores every contact card of a subject whose erasure began).

A handler error rolls the batch back and the events are retried one by one; an event
that keeps failing for a reason that is not an outage is dead-lettered, so one bad
event cannot stop the partition. Outages (database or Kafka unreachable, or a schema
not this code's during an upgrade) are retried with back-off and never dead-letter
anything.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg
from aiokafka import (
    AIOKafkaConsumer,
    AIOKafkaProducer,
    ConsumerRebalanceListener,
    ConsumerRecord,
    TopicPartition,
)
from aiokafka.errors import KafkaError

from shared.bus.dead_letters import dead_letter, dead_letter_mark
from shared.bus.delivery import Delivery, Rejected, Tombstone, read_record
from shared.bus.faults import crash_point
from shared.bus.idempotency import mark_processed, was_processed
from shared.db.pool import Connection
from shared.observability.logs import scrub
from shared.tracing import working_on

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
    # A table, column or function missing (42P01, 42703, 42883) or a grant not there yet
    # (42501): a release's processes and the schema its migrations made disagree for the
    # minutes of a rolling upgrade. Waited out until this process is replaced, as the
    # Faust worker does; dead-lettered, every event of those minutes would need a replay.
    asyncpg.UndefinedTableError,
    asyncpg.UndefinedColumnError,
    asyncpg.UndefinedFunctionError,
    asyncpg.InsufficientPrivilegeError,
    KafkaError,
)


@dataclass(frozen=True)
class _Poll:
    """One poll's records, read and decoded, waiting for their effects."""

    batches: dict[TopicPartition, list[ConsumerRecord]]
    records: list[ConsumerRecord]
    items: list[Item]
    generation: int  # of the assignment it was read under (see _hand_over)


class Unprocessable(Exception):
    """Raised by a handler for an event that can never be applied (dead-letter it)."""


@dataclass(frozen=True)
class ConsumerSettings:
    max_attempts: int = 3
    poll_timeout_ms: int = 500
    backoff_seconds: float = 0.2
    backoff_max_seconds: float = 10.0
    # How long a rebalance waits, in all, for the poll being applied and the commit of
    # its offsets: well within the group's rebalance timeout (aiokafka's default, the
    # session timeout: 10 s), or the group would go on without this member. Past it, the
    # next owner may apply a partition's events while this member still does (their
    # marks still skip repeated events; tombstones would be applied again). A longer
    # rebalance timeout would cost more: a member killed while joining holds every
    # rebalance of its group for that long (the deletion crash test saw it at 60 s).
    handover_seconds: float = 5.0


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
        self._unsettled: Counter[TopicPartition] = Counter()  # read, effects not committed
        self._settled: dict[TopicPartition, int] = {}  # next offset, effects committed
        self._commits = _OffsetCommits(consumer, name)
        self._generation = 0  # one more at every revocation
        self._in_flight: asyncio.Task[None] | None = None  # the poll being applied
        self.applied = 0
        self.dead_lettered = 0
        topics = consumer.subscription()
        if not topics:
            raise ValueError(f"{name}: the consumer must subscribe to its topics (a group)")
        # The same subscription, with the hand-over at every rebalance.
        consumer.subscribe(topics=sorted(topics), listener=_HandOver(self._hand_over))

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Consume until :meth:`stop`; outages are waited out, never skipped.

        Polls are pipelined: while one poll's transaction is with PostgreSQL, the next
        poll is fetched and decoded. Effects are still applied one poll at a time, in
        order, so each partition's events take effect in their order.
        """
        failures = 0
        clean = False
        try:
            while not self._stopping.is_set():
                try:
                    await self._rewind_pending()
                    read = await self._read_poll()
                    await self._settled_in_flight()
                    if read is not None:
                        self._start_settling(read)
                    failures = 0
                except OUTAGES as exc:
                    if self._in_flight is not None:  # let it end before rewinding under it
                        await _ended(self._in_flight)
                        self._in_flight = None
                    self._to_rewind.update(self._unsettled)
                    self._unsettled.clear()
                    failures += 1
                    await self._back_off(failures, exc)
            await self._settled_in_flight()
            clean = True
        except OUTAGES as exc:  # stopping: the last poll will be read again next time
            log.warning("%s: stopped during an outage (%s)", self.name, type(exc).__name__)
            clean = True
        finally:
            if self._in_flight is not None:  # cancelled, or a failure that is not an outage
                self._in_flight.cancel()
                await asyncio.gather(self._in_flight, return_exceptions=True)
                self._in_flight = None
            if not clean:
                self._commits.cancel()
        await self._commits.flush()

    async def _settled_in_flight(self) -> None:
        """Wait for the poll being applied; raise what it raised."""
        if self._in_flight is not None:
            await self._in_flight
            self._in_flight = None

    def _start_settling(self, poll: _Poll) -> None:
        """Apply ``poll`` in the background, unless a rebalance came since it was read:
        then its partitions are read again from where their effects end (some may be
        another member's by now)."""
        if poll.generation != self._generation:
            self._to_rewind.update(poll.batches.keys())
            self._unsettled.subtract(poll.batches.keys())
            self._unsettled += Counter()
            return
        self._in_flight = asyncio.create_task(self._settle(poll))

    async def _hand_over(self, revoked: set[TopicPartition]) -> None:
        """Called by aiokafka before a rebalance, while these partitions are still ours:
        let the poll being applied finish, commit every settled position, and make the
        loop drop what it read ahead. Eager rebalancing revokes every partition, even
        those that come back to this member; those are read again from the commit."""
        self._generation += 1
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._settings.handover_seconds
        if self._in_flight is not None:  # never raises: the loop handles its outcome
            await asyncio.wait([self._in_flight], timeout=self._settings.handover_seconds)
        self._commits.add({})  # also what an earlier commit failed to write
        await self._commits.flush(max(0.0, deadline - loop.time()))
        # Their next owner's commits are the truth from now on: a stale position left
        # here must not move the group's offset back if the partition comes back.
        self._commits.forget(revoked)
        for tp in revoked:
            self._settled.pop(tp, None)

    async def _read_poll(self) -> _Poll | None:
        """Fetch and decode a poll; dead-letter what cannot be read."""
        generation = self._generation
        batches = await self._consumer.getmany(timeout_ms=self._settings.poll_timeout_ms)
        if not batches:
            return None
        # Until their effects are committed, these records must be read again after a
        # failure, not skipped from where the polls got to.
        self._unsettled.update(batches.keys())
        records = [r for part in batches.values() for r in part]
        items: list[Item] = []
        for record in records:
            read = read_record(
                record.value, record.key, record.topic, record.partition, record.offset
            )
            if isinstance(read, Rejected):
                await self._dead_letter(record, read.reason)
            else:
                items.append(read)
        return _Poll(batches, records, items, generation)

    async def _settle(self, poll: _Poll) -> None:
        """Apply a poll's events in one transaction, then hand its offsets over to commit."""
        if poll.items:
            await self._handle(poll.items, poll.records)
        crash_point("consumer.after_effects")
        positions = {tp: r[-1].offset + 1 for tp, r in poll.batches.items()}
        self._settled.update(positions)
        self._commits.add(positions)
        self._unsettled.subtract(poll.batches.keys())
        self._unsettled += Counter()  # drop partitions no poll holds unsettled

    async def _handle(self, items: Sequence[Item], records: Sequence[ConsumerRecord]) -> None:
        """Events of several partitions, each partition's in order, in one transaction."""
        try:
            await self._apply(items)
        except OUTAGES:
            raise
        except Exception:
            log.warning("%s: batch failed, retrying its events one by one", self.name)
            for item in items:
                await self._apply_alone(item, records)

    async def _apply(self, items: Sequence[Item]) -> None:
        # Handlers trace each event's work as they reach it (shared.tracing.traced); what
        # they leave set must not follow the consumer into its next poll.
        with working_on(None):
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
                # Scrubbed here, not only in the header: the reason is logged too.
                reason = f"unprocessable: {scrub(str(exc))}"
                break
            except Exception as exc:
                reason = f"handler failed {attempt} times: {type(exc).__name__}: {scrub(str(exc))}"
                await asyncio.sleep(self._settings.backoff_seconds * attempt)
        # A poll holds several topics, whose partitions and offsets overlap.
        at = (item.topic, item.partition, item.offset)
        record = next(r for r in records if (r.topic, r.partition, r.offset) == at)
        await self._dead_letter(record, reason)

    async def _dead_letter(self, record: ConsumerRecord, reason: str) -> None:
        """Send the record to its DLQ once: marked after the acknowledgement, skipped when
        read again. A crash between the two still sends it twice, never not at all."""
        mark = dead_letter_mark(record)
        async with self._pool.acquire() as conn:
            if await was_processed(conn, self.name, mark):
                log.info("%s: %s[%d]@%d was dead-lettered before", self.name,
                         record.topic, record.partition, record.offset)  # fmt: skip
                return
        log.warning(
            "%s: dead-lettering %s[%d]@%d: %s",
            self.name,
            record.topic,
            record.partition,
            record.offset,
            reason,
        )
        await dead_letter(self._producer, record, list(record.headers or ()), reason, self.name)
        async with self._pool.acquire() as conn:
            await mark_processed(conn, self.name, [mark])
        self.dead_lettered += 1

    async def _rewind_pending(self) -> None:
        """Read again from the first record whose effects are not committed: the later of
        the committed offset and the last settled poll (commits run behind the polls)."""
        for tp in list(self._to_rewind):
            if tp in self._consumer.assignment():
                generation = self._generation
                known = (await self._consumer.committed(tp), self._settled.get(tp))
                position = max((p for p in known if p is not None), default=None)
                if generation != self._generation or tp not in self._consumer.assignment():
                    # Revoked meanwhile: its owner (this member again, after an eager
                    # rebalance) starts from the hand-over's commit, which the offset
                    # read before it may be behind.
                    pass
                elif position is None:
                    await self._consumer.seek_to_beginning(tp)
                else:
                    self._consumer.seek(tp, position)
            self._to_rewind.discard(tp)

    async def _back_off(self, failures: int, exc: BaseException) -> None:
        delay = min(
            self._settings.backoff_max_seconds, self._settings.backoff_seconds * 2**failures
        )
        delay *= random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not security
        log.warning("%s: outage (%s), retrying in %.1fs", self.name, type(exc).__name__, delay)
        await asyncio.sleep(delay)


class _OffsetCommits:
    """Offsets committed behind the consumer, one commit at a time, the newest positions.

    Waiting for each commit (a broker round trip) before the next poll cost a quarter of
    the consumer's time. Committing behind it is safe because the effects and their marks
    are already durable: a commit that fails or never happens only means those records
    are read again, and skipped.
    """

    def __init__(self, consumer: AIOKafkaConsumer, name: str) -> None:
        self._consumer = consumer
        self._name = name
        self._pending: dict[TopicPartition, int] = {}
        self._task: asyncio.Task[None] | None = None

    def add(self, positions: dict[TopicPartition, int]) -> None:
        self._pending.update(positions)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._commit_pending())

    async def flush(self, timeout: float = 10.0) -> None:
        """Wait until every position handed over so far is committed (or failed); give up
        after ``timeout`` (aiokafka retries a commit for as long as Kafka is away). Never
        raises: the commit task's own end, a cancellation included, stays its own."""
        task = self._task
        if task is None or task.done():
            return
        await asyncio.wait([task], timeout=timeout)
        if not task.done():
            log.warning("%s: offsets not committed in time: read again later", self._name)
            self.cancel()

    def forget(self, partitions: set[TopicPartition]) -> None:
        """Drop positions not yet committed for ``partitions`` (no longer ours)."""
        for tp in partitions:
            self._pending.pop(tp, None)

    def cancel(self) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _commit_pending(self) -> None:
        while self._pending:
            assigned = self._consumer.assignment()
            # A revoked partition is its new owner's to commit (aiokafka refuses the lot).
            positions = {tp: p for tp, p in self._pending.items() if tp in assigned}
            self._pending = {}
            if not positions:
                return
            try:
                await self._consumer.commit(positions)
            except Exception as exc:
                # Kept for the next commit, unless a newer position came meanwhile.
                self._pending = {**positions, **self._pending}
                log.warning("%s: offset commit failed (%s): retried with the next one",
                            self._name, type(exc).__name__)  # fmt: skip
                return


class _HandOver(ConsumerRebalanceListener):  # type: ignore[misc]
    """aiokafka's rebalance callbacks: the revocation hands the partitions over."""

    def __init__(self, on_revoked: Callable[[set[TopicPartition]], Awaitable[None]]) -> None:
        self._on_revoked = on_revoked

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        """Nothing to do: a new partition starts from its committed offset."""


async def _ended(task: asyncio.Task[None]) -> None:
    """Wait for a task the loop no longer needs the result of: an outage in it is the
    one being handled; anything else is raised."""
    await asyncio.wait([task])
    failure = task.exception()
    if failure is not None and not isinstance(failure, OUTAGES):
        raise failure


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
