"""An aggregator killed with SIGKILL mid-window loses and doubles no visit (P-03).

The test runs its own worker (a process like the Procfile's) on a scratch copy of
analytics.visits, so that it can kill it without touching the platform's worker.
"""

import asyncio
import hashlib
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import pytest

from shared.bus.kafka_options import reliable_producer
from shared.config import PlatformSettings
from shared.events import encode_envelope, envelope_for
from shared.events.catalogue.analytics import VisitRecorded
from tests.e2e.analytics.support import unique_site
from tests.e2e.analytics.worker_process import Worker

WAVES = 4
PER_WAVE = 600
REDELIVERED_PER_WAVE = 100
VISITORS = 50


def _visits(site: str, count: int) -> list[VisitRecorded]:
    now = datetime.now(UTC)
    return [
        VisitRecorded(
            beacon_id=uuid.uuid4(),
            visitor_hash=hashlib.md5(f"{site}-{i % VISITORS}".encode()).hexdigest(),
            site=site,
            page=f"/p/{i % 5}",
            referrer_host=None,
            device_class="desktop",
            load_time_ms=i % 900,
            occurred_at=now,
        )
        for i in range(count)
    ]


async def _publish(settings: PlatformSettings, topic: str, visits: list[VisitRecorded]) -> None:
    producer = reliable_producer(settings)
    await producer.start()
    try:
        pending = []
        for visit in visits:  # a fresh envelope each time, as a client retry would bring
            envelope = envelope_for(visit, source="analytics", subject=None)
            pending.append(
                await producer.send(topic, encode_envelope(envelope), headers=envelope.headers())
            )
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def _counted(conn: asyncpg.Connection, site: str, grain: str) -> tuple[int, int]:
    row = await conn.fetchrow(
        "SELECT coalesce(sum(visits), 0) AS v, coalesce(sum(unique_visitors), 0) AS u"
        " FROM trend_cells WHERE site = $1 AND grain = $2 AND dimension = 'total'",
        site,
        grain,
    )
    assert row is not None
    return int(row["v"]), int(row["u"])


async def _wait_for_more_than(
    conn: asyncpg.Connection, site: str, seen: int, worker: Worker, timeout: float = 90.0
) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.proc is not None
        assert worker.proc.poll() is None, worker.tail()
        visits, _ = await _counted(conn, site, "day")
        if visits > seen:
            return visits
        await asyncio.sleep(0.05)
    raise AssertionError(f"the worker counted nothing new in {timeout}s:\n{worker.tail()}")


@pytest.mark.promise("P-03")
async def test_worker_killed_mid_window_loses_and_doubles_no_visit(
    settings: PlatformSettings, visits_topic: str
) -> None:
    site = unique_site()
    worker = Worker(settings, visits_topic)
    conn = await asyncpg.connect(settings.database_dsn("analytics"))
    sent: list[VisitRecorded] = []
    kills = []
    try:
        for _ in range(WAVES):
            wave = _visits(site, PER_WAVE)
            again = sent[-REDELIVERED_PER_WAVE:]  # already sent: must not count twice
            sent += wave
            await _publish(settings, visits_topic, wave + again)
            worker.start()
            seen, _ = await _counted(conn, site, "day")
            counted = await _wait_for_more_than(conn, site, seen, worker)
            worker.kill()  # mid-window, right after a batch committed, before Faust's commit
            kills.append(counted)
        worker.start()
        for _ in range(600):
            if (await _counted(conn, site, "day"))[0] >= len(sent):
                break
            await asyncio.sleep(0.2)
        await asyncio.sleep(2.0)  # redelivered duplicates would have landed by now
        results = {grain: await _counted(conn, site, grain) for grain in ("minute", "hour", "day")}
    finally:
        worker.stop()
        await conn.close()
    assert len(kills) == WAVES
    assert any(k < len(sent) for k in kills)
    assert results["day"] == (len(sent), VISITORS)
    assert results["hour"][0] == len(sent)
    assert results["minute"][0] == len(sent)
