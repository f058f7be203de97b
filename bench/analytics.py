"""Analytics benchmarks: the collector and the Faust aggregator against raw aiokafka.

* ``analytics.collector``: beacons/s through the collector API (HTTP, scrubbing,
  hashing, an acknowledged Kafka send per beacon) vs a raw producer sending the same
  number of envelopes. The load is the harness's keep-alive HTTP/1.1 client (64
  connections): httpx capped this at ~600 requests/s, below the collector.
  ``events_per_s_batched``: the same views sent 25 a request to ``POST /beacons``.
* ``analytics.aggregate``: visits/s counted by the aggregator worker process (batched
  PostgreSQL transactions: 12 cells and 12 visitor-set rows per visit) vs a raw
  consumer reading the same pre-filled topic.

Both run on scratch ``analytics.visits.<hex>`` topics and a bench-only site whose rows
are deleted afterwards.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import sys
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.bus import ProbeRecord, prefill, raw_consume
from bench.harness import (
    REPO,
    BenchContext,
    BenchFn,
    Connection,
    Result,
    clients,
    log,
    prepared,
    rate,
    started,
)
from services.analytics.bootstrap import DATABASE, MIGRATIONS
from shared.bus.kafka_options import client_options, reliable_producer
from shared.bus.scratch import wait_for_leaders
from shared.config import PlatformSettings
from shared.db.pool import create_pool
from shared.db.prepare import migrate_service_database
from shared.events import dlq_of, encode_envelope, envelope_for
from shared.events.catalogue.analytics import VisitRecorded
from shared.events.topics import ANALYTICS_VISITS

GOAL = ">= 0.3"
UNIT = "events/s"
API_PORT = 18104
API = "/api/analytics"
CONCURRENCY = 64
BATCH = 25  # views a request in the batched run (the collector's most)


@asynccontextmanager
async def visits_topic(settings: PlatformSettings) -> AsyncIterator[str]:
    name = f"{ANALYTICS_VISITS.name}.bench{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        await admin.create_topics(
            [NewTopic(name, ANALYTICS_VISITS.partitions, 1), NewTopic(dlq_of(name), 1, 1)]
        )
        try:
            await wait_for_leaders(admin, [name, dlq_of(name)])
            yield name
        finally:
            await admin.delete_topics([name, dlq_of(name)])
    finally:
        await admin.close()


async def migrated(settings: PlatformSettings) -> None:
    """The analytics database at its current schema, as the service's processes bring it."""
    pool = await create_pool(settings.database_dsn(DATABASE), max_size=1)
    try:
        await migrate_service_database(pool, DATABASE, MIGRATIONS)
    finally:
        await pool.close()


async def forget_site(settings: PlatformSettings, site: str) -> None:
    conn = await asyncpg.connect(settings.database_dsn("analytics"))
    try:
        for table in ("trend_cell_visitors", "trend_cell_load_times", "trend_cells",
                      "trend_windows"):  # fmt: skip
            await conn.execute(f"DELETE FROM {table} WHERE site = $1", site)
    finally:
        await conn.close()


def _bench_site() -> str:
    """A site of its own per run, in letters: the collector refuses a label holding a
    long run of digits (it may be a phone number)."""
    return f"bench{uuid.uuid4().hex[:10].translate(_LETTERS)}.example"


_LETTERS = str.maketrans("0123456789", "ghijklmnop")


def visit_records(site: str, count: int) -> list[ProbeRecord]:
    now = datetime.now(UTC)
    records = []
    for i in range(count):
        visit = VisitRecorded(
            beacon_id=uuid.uuid4(),
            visitor_hash=hashlib.md5(f"{site}{i % 5000}".encode()).hexdigest(),
            site=site,
            page=f"/page/{i % 50}",
            referrer_host=None if i % 3 else "www.example.org",
            device_class="mobile" if i % 2 else "desktop",
            load_time_ms=i % 3000,
            occurred_at=now,
        )
        envelope = envelope_for(visit, source="analytics", subject=None)
        records.append(ProbeRecord(None, encode_envelope(envelope), envelope.headers()))
    return records


# -- analytics.aggregate --------------------------------------------------------------


async def bench_aggregate(ctx: BenchContext) -> list[Result]:
    # The worker migrates as it starts, while this side already counts in its tables:
    # on a platform no analytics process has run on yet, they must exist first.
    await migrated(ctx.settings)
    base: list[float] = []
    runs: list[float] = []
    for i in range(ctx.repeats):
        site = _bench_site()
        async with visits_topic(ctx.settings) as topic:
            log(f"analytics.aggregate: run {i + 1}/{ctx.repeats}: pre-filling {ctx.events:,}")
            await prefill(ctx.settings, topic, visit_records(site, ctx.events))
            base.append((await raw_consume(ctx, topic)).steady)
            try:
                runs.append(await _aggregate(ctx, topic, site))
            finally:
                await forget_site(ctx.settings, site)
    return [
        Result("analytics.aggregate", "events_per_s_steady", runs, base, UNIT, GOAL,
               {"events": ctx.events, "measured": "first counted to Nth counted"})
    ]  # fmt: skip


async def _aggregate(ctx: BenchContext, topic: str, site: str) -> float:
    group = f"analytics-bench-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "IMT_ANALYTICS_VISITS_TOPIC": topic,
        "IMT_ANALYTICS_WORKER_GROUP": group,
        "IMT_ANALYTICS_CLOSE_INTERVAL_SECONDS": "3600",
    }
    conn = await asyncpg.connect(ctx.settings.database_dsn("analytics"))
    spawned = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.analytics.worker", cwd=REPO, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        first: float | None = None
        first_count = 0
        deadline = time.perf_counter() + ctx.timeout
        while True:
            counted = int(
                await conn.fetchval(
                    "SELECT coalesce(sum(visits), 0) FROM trend_cells WHERE site = $1"
                    " AND grain = 'day' AND dimension = 'total'",
                    site,
                )
            )
            now = time.perf_counter()
            if counted and first is None:
                first, first_count = now, counted
            if counted >= ctx.events:
                break
            if now > deadline or proc.returncode is not None:
                raise RuntimeError(f"aggregator counted {counted} of {ctx.events}")
            await asyncio.sleep(0.02)
        assert first is not None
        if first_count >= ctx.events:  # all in one batch: count from the worker's spawn
            first, first_count = spawned, 0
        value = rate(ctx.events - first_count, now - first)
    finally:
        proc.terminate()
        await proc.wait()
        await conn.close()
        shutil.rmtree(Path(ctx.settings.state_dir) / "faust" / group, ignore_errors=True)
    log(f"  aggregator: {value:,.0f} visits/s")
    return value


# -- analytics.collector --------------------------------------------------------------


async def bench_collector(ctx: BenchContext) -> list[Result]:
    base: list[float] = []
    runs: list[float] = []
    batched: list[float] = []
    for i in range(ctx.repeats):
        site = _bench_site()
        async with visits_topic(ctx.settings) as topic:
            records = visit_records(site, ctx.events)
            log(f"analytics.collector: run {i + 1}/{ctx.repeats} baseline")
            async with started(reliable_producer(ctx.settings)) as producer:
                t0 = time.perf_counter()
                pending = [await producer.send(topic, r.value, headers=r.headers) for r in records]
                await asyncio.gather(*pending)
                base.append(rate(len(records), time.perf_counter() - t0))
            log(f"  raw producer: {base[-1]:,.0f}/s")
            log(f"analytics.collector: run {i + 1}/{ctx.repeats} value")
            runs.append(await _collect(ctx, topic, site))
            log(f"analytics.collector: run {i + 1}/{ctx.repeats} value, batches of {BATCH}")
            batched.append(await _collect(ctx, topic, site, batch=BATCH))
    return [
        Result("analytics.collector", "events_per_s", runs, base, UNIT, GOAL,
               {"events": ctx.events, "concurrency": CONCURRENCY}),
        Result("analytics.collector", "events_per_s_batched", batched, base, UNIT, GOAL,
               {"events": ctx.events, "concurrency": CONCURRENCY,
                "value_kind": f"POST /beacons, {BATCH} views a request"}),
    ]  # fmt: skip


async def _collect(ctx: BenchContext, topic: str, site: str, batch: int = 1) -> float:
    env = {**os.environ, "PYTHONPATH": str(REPO), "IMT_ANALYTICS_VISITS_TOPIC": topic,
           "IMT_ANALYTICS_HTTP_PORT": str(API_PORT), "IMT_LOG_LEVEL": "WARNING"}  # fmt: skip
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.analytics.api", cwd=REPO, env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await _ready(proc)
        if batch == 1:
            requests = [
                prepared("POST", f"{API}/beacon", API_PORT, content=_beacon_body(site, i),
                         headers=_beacon_headers(i % CONCURRENCY))
                for i in range(ctx.events)
            ]  # fmt: skip
        else:
            requests = [
                prepared("POST", f"{API}/beacons", API_PORT,
                         content=_batch_body(site, range(start, min(start + batch, ctx.events))),
                         headers=_beacon_headers(start // batch % CONCURRENCY))
                for start in range(0, ctx.events, batch)
            ]  # fmt: skip
        queue = deque(requests)
        failures = 0

        async def sender(connection: Connection) -> None:
            nonlocal failures
            while queue:
                status, _ = await connection.send(queue.popleft())
                failures += status != 204

        async with clients(API_PORT, [b""] * CONCURRENCY) as made:
            t0 = time.perf_counter()
            await asyncio.gather(*(sender(c.connection) for c in made))
            elapsed = time.perf_counter() - t0
        if failures:
            raise RuntimeError(f"{failures} beacons refused")
    finally:
        proc.terminate()
        await proc.wait()
    value = rate(ctx.events, elapsed)
    log(f"  collector: {value:,.0f} beacons/s")
    return value


async def _ready(proc: asyncio.subprocess.Process) -> None:
    probe = prepared("GET", f"{API}/readyz", API_PORT)
    for _ in range(300):
        if proc.returncode is not None:
            raise RuntimeError(f"the collector exited with {proc.returncode}")
        connection = Connection(API_PORT)
        try:
            if (await connection.send(probe))[0] == 200:
                return
        except OSError:
            pass
        finally:
            await connection.close()
        await asyncio.sleep(0.1)
    raise RuntimeError("the collector never became ready")


def _beacon_headers(n: int) -> dict[str, str]:
    return {"Content-Type": "text/plain",
            "User-Agent": f"Mozilla/5.0 (X11; Linux x86_64) Firefox/{n}"}  # fmt: skip


def _beacon(site: str, i: int) -> dict[str, object]:
    return {"beacon_id": str(uuid.uuid4()), "site": site, "page": f"/page/{i % 50}?utm_source=x",
            "referrer": "https://www.example.org/a", "load_time_ms": i % 3000}  # fmt: skip


def _beacon_body(site: str, i: int) -> bytes:
    return json.dumps(_beacon(site, i)).encode()


def _batch_body(site: str, numbers: range) -> bytes:
    return json.dumps([_beacon(site, i) for i in numbers]).encode()


BENCHMARKS: dict[str, BenchFn] = {
    "analytics.collector": bench_collector,
    "analytics.aggregate": bench_aggregate,
}
