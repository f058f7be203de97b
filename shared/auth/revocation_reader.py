"""An API process's follower of the sessions topic: ``app.state.session_check`` from it.

No consumer group: every process needs every record, so it assigns itself all
partitions. It starts a token lifetime back (``offsets_for_times``), which is all the
revocations of tokens still alive, then follows the topic. It is ready once it has read
up to the end offsets it saw at start. Until it first is, it cannot tell an ended
session's token from another, so it answers every token 503 (retry shortly) rather than
let one pass: the gateway sends requests to a process whether or not it is ready.

Once ready, it asks Kafka for the end offsets again every few seconds and counts itself
current up to when it asked, once it has read that far. A reader cut off from Kafka
would not hear of a logout or a password change: when it has not been current for
``stale_after`` seconds, tokens get the same 503 until it is again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from datetime import timedelta

from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import Request

from shared.auth.revocations import Revocations
from shared.auth.tokens import Claims
from shared.bus.delivery import Delivery, Rejected, Tombstone, read_record
from shared.bus.kafka_options import client_options
from shared.config import PlatformSettings
from shared.events.catalogue.accounts import SessionsRevoked
from shared.events.topics import ACCOUNTS_SESSIONS
from shared.observability import Problem

log = logging.getLogger(__name__)

#: Added to the token lifetime: accounts' clock and ours may differ this much.
CLOCK_MARGIN = timedelta(seconds=60)
PRUNE_EVERY = 30.0
RETRY_AFTER = 2.0
CHECK_EVERY = 2.0
STALE_AFTER = 15.0


class RevocationReader:
    """Follows ``topic`` in a background task while started."""

    def __init__(
        self,
        settings: PlatformSettings,
        topic: str = ACCOUNTS_SESSIONS.name,
        stale_after: float = STALE_AFTER,
    ) -> None:
        self._settings = settings
        self._topic = topic
        self._stale_after = stale_after
        self._current_at = float("-inf")  # monotonic: every revocation before it is applied
        self._lookback = timedelta(seconds=settings.token_max_seconds) + CLOCK_MARGIN
        self.revocations = Revocations(self._lookback)
        self._caught_up = False
        self._known = False  # caught up once since start: every revocation alive is known
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="revocation-reader")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def session_check(self, _request: Request, claims: Claims) -> bool:
        """``app.state.session_check``: False for a token of an ended session; 503 while
        this process has not yet read the revocations of the tokens still alive, or has
        not been current with them for ``stale_after`` seconds."""
        if not self._known:
            raise Problem(
                503,
                "Sessions not known yet",
                "This service is starting and cannot check sessions yet; retry shortly.",
                slug="sessions-not-known",
                headers={"Retry-After": str(int(RETRY_AFTER))},
            )
        if self._stale():
            raise Problem(
                503,
                "Sessions not current",
                "This service cannot reach the sessions it checks tokens against; retry shortly.",
                slug="sessions-not-current",
                headers={"Retry-After": str(int(RETRY_AFTER))},
            )
        return not self.revocations.revoked(claims)

    async def ready(self) -> bool:
        """Readiness: caught up with the topic as it was at (re)start, and current with it
        (else every token is refused: the process should get no traffic)."""
        alive = self._task is not None and not self._task.done()
        return self._caught_up and alive and not self._stale()

    def _stale(self) -> bool:
        return time.monotonic() - self._current_at > self._stale_after

    async def _run(self) -> None:
        while True:
            try:
                await self._follow()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Kafka unreachable, say: not ready, try again
                self._caught_up = False
                log.warning("revocation reader failed (%s); retrying", type(exc).__name__)
                await asyncio.sleep(RETRY_AFTER)

    async def _follow(self) -> None:
        consumer = AIOKafkaConsumer(
            **client_options(self._settings), group_id=None, enable_auto_commit=False
        )
        await consumer.start()
        try:
            partitions = await self._rewind(consumer)
            # Taken before asking: whatever was published before then is below the ends.
            asked = time.monotonic()
            targets = await consumer.end_offsets(partitions)
            pruned = time.monotonic()
            while True:
                batches = await consumer.getmany(timeout_ms=1000)
                for records in batches.values():
                    for r in records:
                        self._apply(read_record(r.value, r.key, r.topic, r.partition, r.offset))
                positions = {tp: await consumer.position(tp) for tp in partitions}
                if all(positions[tp] >= targets[tp] for tp in partitions):
                    self._caught_up = True
                    self._known = True
                    self._current_at = max(self._current_at, asked)
                    if time.monotonic() - asked > CHECK_EVERY:
                        asked = time.monotonic()
                        targets = await consumer.end_offsets(partitions)
                if time.monotonic() - pruned > PRUNE_EVERY:
                    self.revocations.prune(time.time())
                    pruned = time.monotonic()
        finally:
            await consumer.stop()

    async def _rewind(self, consumer: AIOKafkaConsumer) -> list[TopicPartition]:
        """Assign every partition, each at its first record of the last token lifetime."""
        await consumer._client.force_metadata_update()  # this topic's partitions, too
        numbers = consumer.partitions_for_topic(self._topic)
        if not numbers:
            raise LookupError(f"topic {self._topic} has no partitions")
        partitions = [TopicPartition(self._topic, p) for p in sorted(numbers)]
        consumer.assign(partitions)
        since = int((time.time() - self._lookback.total_seconds()) * 1000)
        found = await consumer.offsets_for_times(dict.fromkeys(partitions, since))
        for tp in partitions:
            at = found.get(tp)
            if at is None:  # nothing that recent: only what comes next matters
                await consumer.seek_to_end(tp)
            else:
                consumer.seek(tp, at.offset)
        return partitions

    def _apply(self, read: Delivery | Tombstone | Rejected) -> None:
        """Apply one record. Never raises for the record's content: an exception here
        would restart the reader at the same record, again and again, and this process
        would never be ready (every token 503). What cannot be applied is logged (where
        it is, never whose) and passed over."""
        if isinstance(read, Delivery) and isinstance(read.event, SessionsRevoked):
            where = f"{read.topic}[{read.partition}]@{read.offset}"
            try:
                unreadable = self.revocations.apply(read.event)
            except (ValueError, TypeError, OverflowError, OSError) as exc:
                log.warning(
                    "sessions.revoked record %s cannot be applied (%s); skipped",
                    where,
                    type(exc).__name__,
                )
                return
            if unreadable:
                log.warning(
                    "sessions.revoked record %s: %s is no readable time; applied without it",
                    where,
                    ", ".join(unreadable),
                )
        elif isinstance(read, Rejected):
            # Each API process reads every record: none of them dead-letters it.
            log.warning("unreadable record on %s: %s", self._topic, read.reason)
