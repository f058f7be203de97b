"""The outbox relay: publishes outbox rows in order and deletes them once acknowledged.

At least once: a relay killed between Kafka's acknowledgement and the delete publishes
those rows again on restart; consumers drop the repeats by event id. One relay per
database publishes at a time (a session advisory lock, released when its connection
dies), so rows leave in ``seq`` order and per-key order holds.

The relay polls: at once after a full batch, after ``linger_seconds`` after a partial
one, and every ``idle_poll_seconds`` while the outbox is empty. It is not woken by
NOTIFY, because PostgreSQL commits notifying transactions one at a time (see
``migrations/004_outbox_polled.sql``), which made every event-writing transaction wait
for the previous one; an empty poll is an index probe, cheap at 20 a second.

A row Kafka refuses for good (a non-retriable error: too large, say) is moved to
``bus_outbox_rejected`` with the reason, and the rows behind it go on: otherwise the
relay would fail on it at every restart, and every later event of the service would
wait behind it. The ``outbox_rejected`` gauge pages an operator. Retriable errors (Kafka
away) still stop the batch, to be published again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.errors import (
    CorruptRecordException,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
    InvalidTopicError,
    KafkaError,
    MessageSizeTooLargeError,
    OutOfOrderSequenceNumber,
    ProducerFenced,
    RecordListTooLargeError,
    RecordTooLargeError,
    UnknownProducerId,
)

from shared.bus.faults import crash_point
from shared.db.pool import Connection

log = logging.getLogger(__name__)

_LEADER_LOCK = 0x0B0C_5E1A
_FETCH = (
    "SELECT seq, topic, key, value, headers::text AS headers FROM bus_outbox ORDER BY seq LIMIT $1"
)
_DELETE = "DELETE FROM bus_outbox WHERE seq = ANY($1::bigint[])"
_REJECT = """
INSERT INTO bus_outbox_rejected (seq, topic, key, value, headers, event_id, created_at, reason)
SELECT o.seq, o.topic, o.key, o.value, o.headers, o.event_id, o.created_at, r.reason
FROM bus_outbox o JOIN unnest($1::bigint[], $2::text[]) AS r(seq, reason) USING (seq)
ON CONFLICT (seq) DO NOTHING
"""


@dataclass(frozen=True)
class RelaySettings:
    batch_size: int = 2000
    # The longest a row waits for the relay once the outbox has been empty.
    idle_poll_seconds: float = 0.05
    # How often a relay that is not the leader tries to take over.
    standby_poll_seconds: float = 1.0
    # After a batch smaller than batch_size, let rows gather this long before the next
    # fetch (Kafka's linger.ms, for the outbox): under a steady trickle of writes the
    # relay would otherwise publish a row or two per cycle, three round trips each, and
    # take a CPU core from the service that writes them.
    linger_seconds: float = 0.005
    # After Kafka did not take a batch (away, or timing out): the first wait before the
    # same rows are tried again, doubled each time up to the longest.
    retry_seconds: float = 0.5
    retry_max_seconds: float = 30.0


class OutboxRelay:
    """Publishes one database's outbox to Kafka until stopped."""

    def __init__(
        self,
        dsn: str,
        producer: AIOKafkaProducer,
        settings: RelaySettings | None = None,
        new_producer: ProducerFactory | None = None,
    ) -> None:
        self._dsn = dsn
        self._producer = producer
        # Starts a producer in place of one whose idempotence state broke; without it,
        # that error ends :meth:`run` (the process is restarted by its supervisor).
        self._new_producer = new_producer
        self._settings = settings or RelaySettings()
        self._stopping = asyncio.Event()
        self._retry_in = 0.0
        self.published = 0
        self.renewals = 0

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        """Take the leader lock, then publish until :meth:`stop`."""
        conn: Connection = await asyncpg.connect(self._dsn)
        try:
            await self._become_leader(conn)
            while not self._stopping.is_set():
                published = await self.publish_or_wait(conn)
                if published is None:
                    continue
                if published == 0:
                    await self._wait_for_rows()
                elif published < self._settings.batch_size:
                    await asyncio.sleep(self._settings.linger_seconds)
        finally:
            await conn.close()

    async def publish_or_wait(self, conn: Connection) -> int | None:
        """One batch; when Kafka does not take it, wait (longer each time) and return
        None: its rows stay in the outbox and go in the next try, in order. Those Kafka
        had taken go again then (consumers drop the repeats by event id)."""
        try:
            published = await self.publish_batch(conn)
        except PRODUCER_BROKEN:
            if self._new_producer is None:
                raise
            await self._renew_producer()
            return None
        except KafkaError as exc:
            self._retry_in = min(
                self._settings.retry_max_seconds,
                self._retry_in * 2 if self._retry_in else self._settings.retry_seconds,
            )
            log.warning(
                "Kafka did not take the batch (%s); its rows stay, tried again in %.1f s",
                type(exc).__name__,
                self._retry_in,
            )
            await self._pause(self._retry_in)
            return None
        self._retry_in = 0.0
        return published

    async def publish_batch(self, conn: Connection) -> int:
        """Publish the oldest unsent rows; return how many were published."""
        rows = await conn.fetch(_FETCH, self._settings.batch_size)
        if not rows:
            return 0
        refused: dict[int, str] = {}
        sent: list[tuple[int, asyncio.Future[object]]] = []
        for r in rows:
            try:
                sent.append((r["seq"], await self._send(r)))
            except KafkaError as exc:
                refused[r["seq"]] = _refusal(exc)  # raises unless it is for good
        outcomes = await asyncio.gather(*(f for _, f in sent), return_exceptions=True)
        for (seq, _), outcome in zip(sent, outcomes, strict=True):
            if isinstance(outcome, KafkaError):
                refused[seq] = _refusal(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome
        crash_point("relay.after_publish")
        async with conn.transaction():
            if refused:
                await self._reject(conn, refused)
            await conn.execute(_DELETE, [r["seq"] for r in rows])
        self.published += len(rows) - len(refused)
        return len(rows)

    @property
    def producer(self) -> AIOKafkaProducer:
        """The producer in use (a new one after :meth:`_renew_producer`): its owner's to
        stop."""
        return self._producer

    async def _renew_producer(self) -> None:
        assert self._new_producer is not None
        log.warning("the producer's idempotence state broke; publishing with a new one")
        with contextlib.suppress(Exception):  # it is being dropped for being broken
            await self._producer.stop()
        self._producer = await self._new_producer()
        self.renewals += 1

    async def _send(self, row: asyncpg.Record) -> asyncio.Future[object]:
        future: asyncio.Future[object] = await self._producer.send(
            row["topic"],
            value=row["value"],
            key=row["key"],
            headers=[(k, v.encode()) for k, v in json.loads(row["headers"]).items()],
        )
        return future

    async def _reject(self, conn: Connection, refused: dict[int, str]) -> None:
        for seq, reason in refused.items():  # the place and why, never the content
            log.error("outbox row %d refused by Kafka for good, set aside: %s", seq, reason)
        await conn.execute(_REJECT, list(refused), list(refused.values()))

    async def _become_leader(self, conn: Connection) -> None:
        while not await conn.fetchval("SELECT pg_try_advisory_lock($1)", _LEADER_LOCK):
            log.info("another relay publishes this outbox; waiting to take over")
            await self._pause(self._settings.standby_poll_seconds)

    async def _wait_for_rows(self) -> None:
        await self._pause(self._settings.idle_poll_seconds)

    async def _pause(self, seconds: float) -> None:
        """Sleep, or less if :meth:`stop` is called meanwhile."""
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)


# What Kafka refuses a record for whatever the retry: its size, its bytes, its topic's
# name. Not ``not exc.retriable``: aiokafka marks errors non-retriable that a later
# batch gets past, a send timed out while the broker was away (KafkaTimeoutError) or
# the idempotent producer's sequence errors. Setting such a row aside would lose the
# event and publish its key's next events without it.
REFUSED_FOR_GOOD: tuple[type[KafkaError], ...] = (
    MessageSizeTooLargeError,
    RecordTooLargeError,
    RecordListTooLargeError,
    CorruptRecordException,
    InvalidTopicError,
)


# The idempotent producer's own state is lost, not the broker: aiokafka keeps a
# partition's sequence moving and never resets its producer id, so every later batch
# of this producer fails the same way. Only a new producer (a new id) gets past it.
PRODUCER_BROKEN: tuple[type[KafkaError], ...] = (
    OutOfOrderSequenceNumber,
    UnknownProducerId,
    ProducerFenced,
    InvalidProducerEpoch,
    InvalidProducerIdMapping,
)

ProducerFactory = Callable[[], Awaitable[AIOKafkaProducer]]


def _refusal(exc: KafkaError) -> str:
    """Why Kafka refused a row for good; raises ``exc`` unless it is one of
    :data:`REFUSED_FOR_GOOD` (the batch stops; its rows stay in the outbox)."""
    if not isinstance(exc, REFUSED_FOR_GOOD):
        raise exc
    return f"{type(exc).__name__}: {exc}"[:500]
