"""Foundation benchmarks of the bus: relay, idempotent consumer, and Faust.

``bus.relay``       OutboxRelay.run() draining an outbox of N probes, against a raw
                    reliable producer sending the same N records (same bytes, keys and
                    headers) with send() and one gather.
``bus.consumer``    IdempotentConsumer applying the probe effect (COPY into a scratch
                    database) to N pre-filled probes, against a raw manual-commit
                    consumer counting the same N records and committing at the end.
                    Also, for insight (no goal): the same against a hand-written
                    at-least-once consumer that decodes the same way and writes the
                    same effect per poll, without dedupe marks or dead-lettering:
                    what exactly-once costs over the effect itself. And decoding the
                    same records in memory alone (``decode_only_per_s``): the ceiling of
                    any consumer that validates its events.
``bus.faust_noop``  A Faust worker process whose agent only counts accepted() events,
                    against the same raw consumer; measured from the worker's start
                    (``events_per_s``) and from its first event (``events_per_s_steady``,
                    against the raw consumer's own first-record-to-Nth rate).

Every measurement gets fresh topics (6 partitions, like bus.selftest), consumer groups
and databases. Done is decided in-process (the relay's ``published``, the consumer's
``applied``), so nothing polls the database inside the timed window.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import json
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import asyncpg
from aiokafka import TopicPartition

from bench.harness import (
    INFORMATIVE,
    REPO,
    BenchContext,
    BenchFn,
    Result,
    chunks,
    interleaved,
    log,
    rate,
    scratch_database,
    scratch_topic,
    started,
    unique,
    wait_until,
)
from shared.bus.consumer import IdempotentConsumer
from shared.bus.delivery import Delivery, read_record
from shared.bus.kafka_options import manual_commit_consumer, reliable_producer
from shared.bus.relay import OutboxRelay
from shared.bus.selftest import EFFECTS_DDL, probe_envelopes, queue_probes, record_probe_effects
from shared.config import PlatformSettings
from shared.events import Envelope, encode_envelope
from shared.events.topics import BUS_SELFTEST

GOAL = ">= 0.5"
UNIT = "events/s"
PROBE_KEYS = 1000
OUTBOX_INSERT_BATCH = 5000


@dataclass(frozen=True)
class ProbeRecord:
    """A probe exactly as the relay publishes it."""

    key: bytes | None
    value: bytes
    headers: list[tuple[str, bytes]]


@functools.cache
def probes(count: int) -> tuple[list[Envelope], list[ProbeRecord]]:
    """``count`` probe envelopes over PROBE_KEYS keys (seq increasing per key), and
    their records: the bytes the outbox stores and the relay sends."""
    keys = [f"subject-{i % PROBE_KEYS}" for i in range(count)]
    counters: dict[str, itertools.count[int]] = defaultdict(itertools.count)
    envelopes = probe_envelopes(keys, [next(counters[k]) for k in keys])
    records = [ProbeRecord(e.key(), encode_envelope(e), e.headers()) for e in envelopes]
    return envelopes, records


# -- bus.relay -------------------------------------------------------------------------


async def bench_relay(ctx: BenchContext) -> list[Result]:
    envelopes, records = probes(ctx.events)

    async def baseline(_: int) -> float:
        async with (
            scratch_topic(ctx.settings) as topic,
            started(reliable_producer(ctx.settings)) as producer,
        ):
            t0 = time.perf_counter()
            pending = [
                await producer.send(topic, value=r.value, key=r.key, headers=r.headers)
                for r in records
            ]
            await asyncio.gather(*pending)
            return _report("raw producer", rate(len(records), time.perf_counter() - t0))

    async def value(_: int) -> float:
        return await _relay_drain(ctx, envelopes)

    base, runs = await interleaved(ctx.repeats, baseline, value, "bus.relay")
    return [Result("bus.relay", "events_per_s", runs, base, UNIT, GOAL, {"events": ctx.events})]


async def _relay_drain(ctx: BenchContext, envelopes: Sequence[Envelope]) -> float:
    async with scratch_database(ctx.settings) as dsn, scratch_topic(ctx.settings) as topic:
        conn = await asyncpg.connect(dsn)
        try:
            for batch in chunks(envelopes, OUTBOX_INSERT_BATCH):
                await queue_probes(conn, topic, list(batch))
            async with started(reliable_producer(ctx.settings)) as producer:
                relay = OutboxRelay(dsn, producer)
                t0 = time.perf_counter()
                task = asyncio.create_task(relay.run())
                try:
                    await wait_until(
                        lambda: relay.published >= len(envelopes) or task.done(),
                        ctx.timeout,
                        "relay draining the outbox",
                    )
                    elapsed = time.perf_counter() - t0
                finally:
                    relay.stop()
                    await task
            left = await conn.fetchval("SELECT count(*) FROM bus_outbox")
            if relay.published != len(envelopes) or left != 0:
                raise RuntimeError(f"relay published {relay.published}, outbox still has {left}")
        finally:
            await conn.close()
    return _report("relay", rate(len(envelopes), elapsed))


# -- the pre-filled topic and the raw consumer (baseline of bus.consumer and faust) -----


async def prefill(settings: PlatformSettings, topic: str, records: Sequence[ProbeRecord]) -> None:
    async with started(reliable_producer(settings)) as producer:
        pending = [
            await producer.send(topic, value=r.value, key=r.key, headers=r.headers) for r in records
        ]
        await asyncio.gather(*pending)


@dataclass(frozen=True)
class ConsumeTiming:
    total: float  # events/s from consumer start to N counted and committed
    steady: float  # events/s after the first fetched batch, to the Nth record


async def raw_consume(ctx: BenchContext, topic: str) -> ConsumeTiming:
    """A manual-commit consumer (fresh group) counting records to N; commits at the end."""
    n = ctx.events
    consumer = manual_commit_consumer(ctx.settings, topic, group_id=unique(f"{topic}.raw"))
    t0 = time.perf_counter()
    await consumer.start()
    try:
        count, first_batch, t_first = 0, 0, 0.0
        positions: dict[TopicPartition, int] = {}

        async def consume() -> None:
            nonlocal count, first_batch, t_first
            while count < n:
                batches = await consumer.getmany(timeout_ms=500)
                got = sum(len(recs) for recs in batches.values())
                if got and not count:
                    first_batch, t_first = got, time.perf_counter()
                count += got
                for tp, recs in batches.items():
                    positions[tp] = recs[-1].offset + 1

        await asyncio.wait_for(consume(), ctx.timeout)
        t_nth = time.perf_counter()
        await consumer.commit(positions)
        t_end = time.perf_counter()
    finally:
        await consumer.stop()
    if count != n:
        raise RuntimeError(f"raw consumer read {count} records, expected {n}")
    timing = ConsumeTiming(rate(n, t_end - t0), rate(n - first_batch, t_nth - t_first))
    _report("raw consumer", timing.total, f"steady {timing.steady:,.0f}/s")
    return timing


# -- bus.consumer ----------------------------------------------------------------------


async def bench_consumer(ctx: BenchContext) -> list[Result]:
    _, records = probes(ctx.events)
    base: list[float] = []
    at_least_once: list[float] = []
    decode_only: list[float] = []
    runs: list[float] = []
    for i in range(ctx.repeats):
        async with scratch_topic(ctx.settings) as topic:
            log(f"bus.consumer: run {i + 1}/{ctx.repeats}: pre-filling {len(records):,} probes")
            await prefill(ctx.settings, topic, records)
            log(f"bus.consumer: run {i + 1}/{ctx.repeats} baseline")
            base.append((await raw_consume(ctx, topic)).total)
            log(f"bus.consumer: run {i + 1}/{ctx.repeats} value")
            runs.append(await _idempotent_consume(ctx, topic))
            log(f"bus.consumer: run {i + 1}/{ctx.repeats} hand-written at-least-once consumer")
            at_least_once.append(await _at_least_once_consume(ctx, topic))
            decode_only.append(_decode_only(records))
    extra = {"events": ctx.events}
    return [
        Result("bus.consumer", "events_per_s", runs, base, UNIT, GOAL, extra),
        Result(
            "bus.consumer",
            "events_per_s_vs_at_least_once",
            runs,
            at_least_once,
            UNIT,
            INFORMATIVE,
            {**extra, "baseline_kind": "hand-written loop: same decode and effect, no dedupe"},
        ),
        Result(
            "bus.consumer",
            "decode_only_per_s",
            decode_only,
            base,
            UNIT,
            INFORMATIVE,
            {**extra, "value_kind": "read_record alone on the same records: no Kafka, no SQL"},
        ),
    ]


def _decode_only(records: Sequence[ProbeRecord]) -> float:
    """Decoding and validating the records, in memory: what any consumer of validated
    events pays before it fetches or writes anything."""
    topic = BUS_SELFTEST.name
    t0 = time.perf_counter()
    read = [read_record(r.value, r.key, topic, i % 6, i) for i, r in enumerate(records)]
    elapsed = time.perf_counter() - t0
    if not all(isinstance(item, Delivery) for item in read):
        raise RuntimeError("decode only: a probe did not decode to a delivery")
    return _report("decode only", rate(len(records), elapsed))


async def _at_least_once_consume(ctx: BenchContext, topic: str) -> float:
    """Decode each poll with read_record, COPY its effects and commit, in a plain loop."""
    n = ctx.events
    consumer = manual_commit_consumer(ctx.settings, topic, group_id=unique(f"{topic}.alo"))
    async with scratch_database(ctx.settings, [EFFECTS_DDL]) as dsn:
        conn = await asyncpg.connect(dsn)
        try:

            async def consume() -> None:
                count = 0
                while count < n:
                    batches = await consumer.getmany(timeout_ms=500)
                    records = [r for part in batches.values() for r in part]
                    items = [
                        read_record(r.value, r.key, r.topic, r.partition, r.offset) for r in records
                    ]
                    deliveries = [i for i in items if isinstance(i, Delivery)]
                    async with conn.transaction():
                        await record_probe_effects(conn, deliveries)
                    await consumer.commit({tp: r[-1].offset + 1 for tp, r in batches.items()})
                    count += len(deliveries)

            t0 = time.perf_counter()
            async with started(consumer):
                await asyncio.wait_for(consume(), ctx.timeout)
            elapsed = time.perf_counter() - t0
            effects = await conn.fetchval("SELECT count(*) FROM probe_effects")
        finally:
            await conn.close()
    if effects != n:
        raise RuntimeError(f"at-least-once consumer wrote {effects} effects, expected {n}")
    return _report("at-least-once consumer", rate(n, elapsed))


async def _idempotent_consume(ctx: BenchContext, topic: str) -> float:
    n = ctx.events
    group = unique(f"{topic}.idempotent")
    async with scratch_database(ctx.settings, [EFFECTS_DDL]) as dsn:
        pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
        try:
            async with started(reliable_producer(ctx.settings)) as producer:
                consumer = manual_commit_consumer(ctx.settings, topic, group_id=group)
                idempotent = IdempotentConsumer(
                    group, consumer, producer, pool, record_probe_effects
                )
                t0 = time.perf_counter()
                async with started(consumer):
                    task = asyncio.create_task(idempotent.run())
                    try:
                        await wait_until(
                            lambda: idempotent.applied >= n or task.done(),
                            ctx.timeout,
                            "idempotent consumer applying probes",
                        )
                        elapsed = time.perf_counter() - t0
                    finally:
                        idempotent.stop()
                        await task
            async with pool.acquire() as conn:
                effects = await conn.fetchval("SELECT count(DISTINCT event_id) FROM probe_effects")
        finally:
            await pool.close()
    if effects != n or idempotent.dead_lettered:
        raise RuntimeError(
            f"{effects} distinct effects (expected {n}), {idempotent.dead_lettered} dead letters"
        )
    return _report("idempotent consumer", rate(n, elapsed))


# -- bus.faust_noop --------------------------------------------------------------------


async def bench_faust_noop(ctx: BenchContext) -> list[Result]:
    _, records = probes(ctx.events)
    raw: list[ConsumeTiming] = []
    faust: list[ConsumeTiming] = []
    for i in range(ctx.repeats):
        async with scratch_topic(ctx.settings) as topic:
            log(f"bus.faust_noop: run {i + 1}/{ctx.repeats}: pre-filling {len(records):,} probes")
            await prefill(ctx.settings, topic, records)
            log(f"bus.faust_noop: run {i + 1}/{ctx.repeats} baseline")
            raw.append(await raw_consume(ctx, topic))
            log(f"bus.faust_noop: run {i + 1}/{ctx.repeats} value (Faust worker process)")
            faust.append(await _faust_consume(ctx, topic))
    extra = {"events": ctx.events}
    return [
        Result(
            "bus.faust_noop",
            "events_per_s",
            [t.total for t in faust],
            [t.total for t in raw],
            UNIT,
            GOAL,
            {**extra, "measured": "worker start to Nth event"},
        ),
        Result(
            "bus.faust_noop",
            "events_per_s_steady",
            [t.steady for t in faust],
            [t.steady for t in raw],
            UNIT,
            GOAL,
            {**extra, "measured": "first event to Nth event"},
        ),
    ]


async def _faust_consume(ctx: BenchContext, topic: str) -> ConsumeTiming:
    n = ctx.events
    group = unique(f"{topic}.faust")
    datadir = Path(ctx.settings.state_dir) / "faust" / group
    with tempfile.TemporaryDirectory(prefix="bench-faust-") as tmp:
        progress, output = Path(tmp) / "progress.json", Path(tmp) / "worker.log"
        with output.open("wb") as log_file:
            spawned = time.monotonic()
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bench.faust_worker",
                "--topic", topic, "--group", group,
                "--events", str(n), "--progress", str(progress),
                cwd=REPO, stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file,
            )  # fmt: skip
            try:
                await wait_until(
                    lambda: progress.exists() or proc.returncode is not None,
                    ctx.timeout,
                    "Faust worker counting probes",
                    interval=0.05,
                )
                if not progress.exists():
                    tail = output.read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"Faust worker exited {proc.returncode}:\n{tail}")
                timings = json.loads(progress.read_text())
            finally:
                await _end(proc)
                shutil.rmtree(datadir, ignore_errors=True)
    start, first, nth = timings["worker_start"], timings["first"], timings["nth"]
    timing = ConsumeTiming(rate(n, nth - start), rate(n - 1, nth - first))
    _report(
        "Faust worker",
        timing.total,
        f"steady {timing.steady:,.0f}/s; interpreter+imports {start - spawned:.1f}s, "
        f"worker start to first event {first - start:.1f}s",
    )
    return timing


async def _end(proc: asyncio.subprocess.Process) -> None:
    """Wait briefly for the worker's own exit; terminate, then kill, if it lingers."""
    for signal_it in (None, proc.terminate, proc.kill):
        if proc.returncode is not None:
            return
        if signal_it is not None:
            signal_it()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            continue


def _report(what: str, events_per_s: float, detail: str = "") -> float:
    log(f"  {what}: {events_per_s:,.0f} events/s" + (f" ({detail})" if detail else ""))
    return events_per_s


BENCHMARKS: dict[str, BenchFn] = {
    "bus.relay": bench_relay,
    "bus.consumer": bench_consumer,
    "bus.faust_noop": bench_faust_noop,
}
