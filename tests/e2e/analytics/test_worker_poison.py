"""A visit that cannot have happened, or a record without any, is dead-lettered with the
reason, and the visits around it on its partition are counted: the aggregator never
stalls on one record, and none vanishes unseen.

The test runs its own worker (:mod:`tests.e2e.analytics.worker_process`) on a scratch
copy of analytics.visits, all the visits on one partition, the bad one between others.
"""

import asyncio
import time
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from shared.bus.dead_letters import H_REASON
from shared.bus.kafka_options import client_options, reliable_producer
from shared.config import PlatformSettings
from shared.events import decode_event, dlq_of, encode_envelope, envelope_for
from shared.events.catalogue.analytics import VisitRecorded
from tests.e2e.analytics.support import unique_site
from tests.e2e.analytics.worker_process import Worker

# Valid by the event's schema (it has a zone), but past what a UTC window can hold: as
# UTC it is in year 10000 (Python's datetime raised OverflowError, retried for good).
END_OF_TIME = "9999-12-31T23:00:00-05:00"
AROUND = 5  # good visits before the bad one, and after it


def _visit(site: str, occurred_at: datetime | str) -> VisitRecorded:
    return VisitRecorded(
        beacon_id=uuid.uuid4(),
        visitor_hash=uuid.uuid4().hex,
        site=site,
        page="/",
        device_class="desktop",
        occurred_at=occurred_at,
    )


async def _publish_in_order(
    settings: PlatformSettings, topic: str, visits: list[VisitRecorded | None]
) -> None:
    """One partition, one at a time: each visit is at the offset after the previous
    (None: a record without a value)."""
    producer = reliable_producer(settings)
    await producer.start()
    try:
        for visit in visits:
            if visit is None:
                await producer.send_and_wait(topic, None, key=b"no-visit", partition=0)
                continue
            envelope = envelope_for(visit, source="analytics", subject=None)
            await producer.send_and_wait(
                topic, encode_envelope(envelope), partition=0, headers=envelope.headers()
            )
    finally:
        await producer.stop()


async def _letters(settings: PlatformSettings, topic: str) -> list[ConsumerRecord]:
    """Every record of a DLQ (one partition) up to its current end, headers included."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False,
                                auto_offset_reset="earliest", group_id=None)  # fmt: skip
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        end = (await consumer.end_offsets([tp]))[tp]
        found: list[ConsumerRecord] = []
        while await consumer.position(tp) < end:
            batches = await consumer.getmany(tp, timeout_ms=1000)
            found += batches.get(tp, [])
        return found
    finally:
        await consumer.stop()


async def _counted(conn: asyncpg.Connection, site: str) -> int:
    visits = await conn.fetchval(
        "SELECT coalesce(sum(visits), 0) FROM trend_cells"
        " WHERE site = $1 AND grain = 'day' AND dimension = 'total'",
        site,
    )
    return int(visits)


async def _dead_lettered_between_counted_visits(
    settings: PlatformSettings, visits_topic: str, site: str, bad: VisitRecorded | None
) -> tuple[ConsumerRecord, str]:
    """The worker's letter of ``bad``, published between visits that must all count, and
    the letter's reason."""
    now = datetime.now(UTC)
    before = [_visit(site, now) for _ in range(AROUND)]
    # A collector's clock a little ahead of the worker's: still counted.
    after = [_visit(site, now + timedelta(seconds=30)) for _ in range(AROUND)]
    await _publish_in_order(settings, visits_topic, [*before, bad, *after])

    worker = Worker(settings, visits_topic)
    conn = await asyncpg.connect(settings.database_dsn("analytics"))
    counted, letters = 0, []
    try:
        worker.start()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert worker.proc is not None
            assert worker.proc.poll() is None, f"the worker died:\n{worker.tail()}"
            counted = await _counted(conn, site)
            letters = await _letters(settings, dlq_of(visits_topic))
            if counted >= 2 * AROUND and letters:
                break
            await asyncio.sleep(0.5)
        await asyncio.sleep(2.0)  # a double count or a second letter would show by now
        counted = await _counted(conn, site)
        letters = await _letters(settings, dlq_of(visits_topic))
        log = worker.tail()
    finally:
        worker.stop()
        await conn.close()

    reasons = [dict(r.headers).get(H_REASON, b"").decode() for r in letters]
    stalled = f"counted {counted} of {2 * AROUND} visits around the bad one; letters: {reasons}"
    stalled += f"\n{log}"
    assert counted == 2 * AROUND, stalled
    assert len(letters) == 1, stalled
    return letters[0], reasons[0]


async def test_a_visit_from_the_end_of_time_is_dead_lettered_and_its_neighbours_counted(
    settings: PlatformSettings, visits_topic: str
) -> None:
    site = unique_site()
    bad = _visit(site, END_OF_TIME)
    letter, reason = await _dead_lettered_between_counted_visits(settings, visits_topic, site, bad)
    assert letter.value is not None
    _, event = decode_event(letter.value)  # the record itself, to be replayed if need be
    assert isinstance(event, VisitRecorded)
    assert event.beacon_id == bad.beacon_id
    assert "occurred_at" in reason, reason
    assert "future" in reason, reason


async def test_a_record_without_a_visit_is_dead_lettered_not_passed_over(
    settings: PlatformSettings, visits_topic: str
) -> None:
    """A null value is a tombstone only on a compacted topic; analytics.visits is not."""
    letter, reason = await _dead_lettered_between_counted_visits(
        settings, visits_topic, unique_site(), None
    )
    assert letter.value is None
    assert letter.key == b"no-visit"
    assert "without a value" in reason, reason
    assert "not compacted" in reason, reason
