"""The aggregator: a Faust worker over analytics.visits. ``python -m services.analytics.worker``.

At-least-once, one agent, concurrency 1. Visits are taken in batches
(``take_events``): each batch is counted in one PostgreSQL transaction that also marks
its beacon ids processed, and Faust acknowledges the batch's offsets only after that
transaction committed. A worker killed at any point therefore loses nothing (the
uncommitted offsets are read again) and doubles nothing (the beacon ids are marked).
Errors never escape the batch body: ``take_events`` would acknowledge the batch as it
unwinds, so a failing batch is retried here until it commits. A visit that cannot have
happened (``handlers.not_countable``: ahead of the worker's clock) is dead-lettered with
the reason before the batch is counted. A batch failing for a visit's own data
(PostgreSQL refusing it, a time the window arithmetic cannot place: ``VISIT_FAULTS``)
is counted visit by visit instead, and the visit at fault is dead-lettered with the
reason, so one bad visit never stops the partitions behind it.

A batch commits within ``handlers.COMMIT_DEADLINE`` of taking its cutoff for late
visits, or is counted again: the API takes a day for final by its own clock, and must
never see it change (see handlers, "when a day is final").

A timer publishes closed windows (end + grace) as TrendWindowClosed through the
outbox (the analytics relay sends them), and forgets expired visitor sets and windows.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import asyncpg
import faust

from services.analytics import handlers
from services.analytics.bootstrap import bootstrap
from services.analytics.config import AnalyticsSettings
from shared.bus import Delivery, Rejected
from shared.bus.faust_app import EnvelopeSchema, create_faust_app, publish_dead_letter, run_worker
from shared.bus.idempotency import forget_processed_before
from shared.events.catalogue.analytics import VisitRecorded
from shared.process import start_process
from shared.service import Runtime

log = logging.getLogger(__name__)

BATCH = 2000
BATCH_WITHIN_SECONDS = 0.5
STREAM_BUFFER = 8 * BATCH
CLEANUP_EVERY_SECONDS = 600.0
# bus_processed_events marks outlive any record Kafka can redeliver (14 days).
PROCESSED_MARKS_AGE = timedelta(days=15)


def build_app(settings: AnalyticsSettings) -> faust.App:
    app = create_faust_app(
        settings.analytics_worker_group,
        settings,
        # A killed worker's partitions come back after this, not after Faust's 60 s.
        broker_session_timeout=settings.kafka_session_timeout_seconds,
        broker_heartbeat_interval=min(1.0, settings.kafka_session_timeout_seconds / 3),
        # Let the consumer read ahead while a batch is in PostgreSQL: with Faust's
        # default (4096) the partitions are paused and each resume waits on a fetch.
        stream_buffer_maxsize=STREAM_BUFFER,
    )
    source = app.topic(settings.analytics_visits_topic, schema=EnvelopeSchema())
    runtimes: list[Runtime] = []
    lock = asyncio.Lock()

    async def runtime() -> Runtime:
        async with lock:
            if not runtimes:
                runtimes.append(await bootstrap(settings))
            return runtimes[0]

    @app.agent(source, concurrency=1)
    async def count_visits(stream: faust.StreamT[Any]) -> None:
        pool = (await runtime()).pool
        batches = stream.take_events(BATCH, within=BATCH_WITHIN_SECONDS)  # type: ignore[attr-defined]

        async def count(visits: list[VisitRecorded]) -> None:
            await _count(pool, visits, settings)

        async def dead_letter(event: Any, reason: str) -> None:
            await publish_dead_letter(
                app, event.message, reason, settings.analytics_worker_group, pool
            )

        async for events in batches:
            batch, refused = sort_out(events, datetime.now(UTC))
            for event, reason in refused:
                await _until_done(partial(dead_letter, event, reason))
            if batch:
                await count_batch(batch, count, dead_letter)

    @app.timer(interval=settings.analytics_close_interval_seconds)  # type: ignore[untyped-decorator]
    async def publish_windows() -> None:
        try:
            pool = (await runtime()).pool
            grace = timedelta(seconds=settings.analytics_window_grace_seconds)
            while await handlers.publish_closed_windows(pool, grace):
                pass
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("publishing closed windows failed (%s); retrying", type(exc).__name__)

    @app.timer(interval=CLEANUP_EVERY_SECONDS)  # type: ignore[untyped-decorator]
    async def forget_old() -> None:
        try:
            pool = (await runtime()).pool
            async with pool.acquire() as conn, conn.transaction():
                await handlers.forget_old(
                    conn,
                    timedelta(hours=settings.analytics_visitor_set_hours),
                    {
                        "minute": timedelta(days=settings.analytics_minute_retention_days),
                        "hour": timedelta(days=settings.analytics_day_retention_days),
                        "day": timedelta(days=settings.analytics_day_retention_days),
                    },
                    timedelta(days=settings.analytics_release_retention_days),
                )
                await forget_processed_before(conn, PROCESSED_MARKS_AGE)
        except (OSError, asyncpg.PostgresError) as exc:
            log.warning("retention clean-up failed (%s)", type(exc).__name__)

    return app


async def _count(
    pool: asyncpg.Pool, visits: list[VisitRecorded], settings: AnalyticsSettings
) -> None:
    """Count a batch in one transaction. The cutoff for late visits is taken as late as
    possible (with a connection, in the transaction), and a transaction that runs past
    handlers.COMMIT_DEADLINE from there is rolled back rather than committed: committed
    later, it could change a day the API already takes for final (``_until_done``
    counts the batch again with a new cutoff; see handlers, "when a day is final")."""
    lateness = timedelta(hours=settings.analytics_visitor_set_hours)
    async with pool.acquire() as conn, conn.transaction():
        started = time.monotonic()
        too_old = handlers.too_old_before(datetime.now(UTC), lateness)
        await handlers.aggregate(
            conn, visits, too_old, cap=settings.analytics_max_labels_per_window
        )
        handlers.check_commit_deadline(started)


def sort_out(
    events: Iterable[Any], now: datetime
) -> tuple[list[tuple[Any, VisitRecorded]], list[tuple[Any, str]]]:
    """A batch's stream events split into the visits to count and the records to
    dead-letter with why: unreadable ones, and visits the worker cannot count by its
    clock ``now`` (see handlers, "a visit that cannot have happened")."""
    visits: list[tuple[Any, VisitRecorded]] = []
    refused: list[tuple[Any, str]] = []
    for event in events:
        value = event.value
        if isinstance(value, Rejected):
            refused.append((event, value.reason))
        elif isinstance(value, Delivery) and isinstance(value.event, VisitRecorded):
            reason = handlers.not_countable(value.event, now)
            if reason is None:
                visits.append((event, value.event))
            else:
                refused.append((event, reason))
        else:  # a tombstone (a visits topic named as no registered one), or not a visit
            refused.append((event, f"not a visit: {type(value).__name__}"))
    return visits, refused


# What a visit's own data can cause, so that a retry fails alike: SQLSTATE class 22 (a
# NUL in text, a value out of range) and values asyncpg cannot encode (DataError), and
# arithmetic or a value no window can hold (a time past the calendar: OverflowError).
# Such a batch is counted visit by visit and the visit at fault is dead-lettered. Any
# other error is no visit's: an outage, a commit past its deadline, a grant revoked or a
# table missing mid-deploy, a bug. The batch is retried until it counts, as every
# consumer waits out an outage: dead-lettered instead, every visit would be, and a
# replay would come after the late-visit cutoff, never to be counted.
VISIT_FAULTS: tuple[type[Exception], ...] = (asyncpg.DataError, ArithmeticError, ValueError)
Counter = Callable[[list[VisitRecorded]], Awaitable[None]]
DeadLetter = Callable[[Any, str], Awaitable[None]]  # a stream event, and why


async def count_batch(
    batch: Sequence[tuple[Any, VisitRecorded]], count: Counter, dead_letter: DeadLetter
) -> None:
    """Count a batch's visits at once; if a visit is at fault (:data:`VISIT_FAULTS`),
    one at a time, and dead-letter each visit that cannot be counted (the others are).

    A failed batch's transaction is rolled back whole: nothing of it is counted until
    each visit is, alone, in a transaction marking its beacon id (so once)."""
    try:
        await _until_done(lambda: count([visit for _, visit in batch]), fatal=VISIT_FAULTS)
    except VISIT_FAULTS as exc:
        log.warning("a batch of %d visits cannot be counted (%s); counting them one at a time",
                    len(batch), _reason(exc))  # fmt: skip
        for event, visit in batch:
            await _until_done(partial(_count_or_dead_letter, event, visit, count, dead_letter))


async def _count_or_dead_letter(
    event: Any, visit: VisitRecorded, count: Counter, dead_letter: DeadLetter
) -> None:
    """Count one visit, or dead-letter it with the reason it cannot be counted. Any
    other error is raised, for the caller to retry: it says nothing of the visit."""
    try:
        await count([visit])
    except VISIT_FAULTS as exc:
        await dead_letter(event, _reason(exc))


def _reason(exc: Exception) -> str:
    """Why a visit cannot be counted, without its content (asyncpg's messages may quote
    the value sent, and other errors' may too): the error's kind and SQLSTATE."""
    if not isinstance(exc, asyncpg.DataError):  # not PostgreSQL's refusal: nothing stored
        return f"cannot be counted: {type(exc).__name__}"
    sqlstate = getattr(exc, "sqlstate", None)
    code = "" if sqlstate is None else f" ({sqlstate})"
    return f"cannot be stored: {type(exc).__name__}{code}"


async def _until_done(attempt: Any, fatal: tuple[type[Exception], ...] = ()) -> None:
    """Retry an effect until it succeeds: an unapplied batch must never be acknowledged.
    Errors of the ``fatal`` kinds are raised instead: retrying cannot cure them."""
    failures = 0
    while True:
        try:
            await attempt()
            return
        except asyncio.CancelledError:
            raise
        except fatal:
            raise
        except Exception as exc:
            failures += 1
            delay = _delay(failures)
            log.warning("batch failed (%s), retry %d in %.1fs", type(exc).__name__, failures, delay)
            await asyncio.sleep(delay)


def _delay(failures: int) -> float:
    return min(10.0, 0.1 * 2.0**failures) * random.uniform(0.5, 1.0)  # noqa: S311 - jitter


def main() -> None:
    settings = AnalyticsSettings(service_name="analytics-worker")
    start_process(settings.service_name, settings.log_level)
    app = build_app(settings)
    run_worker(app)


if __name__ == "__main__":
    main()
