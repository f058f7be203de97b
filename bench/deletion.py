"""Deletion benchmark: account deletions through the saga, from request to ``shredded``.

``deletion.saga``  N deletion requests (1,000 at the default ``--events 50000``; the
                   count scales as events / 50) with grace 0, published at once as
                   ``DeletionRequested`` on a scratch copy of accounts.lifecycle. The
                   real deletion worker and outbox relay run as two processes (as in the
                   Procfile; ``python -m bench.deletion worker|relay``) on a scratch
                   deletion database, a scratch vault database and scratch copies of the
                   topics (IMT_DELETION_TOPIC_SUFFIX, IMT_DELETION_DATABASE_DSN).
                   Three stand-in stores (accounts, notifier, analytics: a bench helper,
                   not the services; each its own consumer group and producer) answer
                   every EraseSubject with a SubjectErased receipt; the accounts one
                   also closes each request's cancel window (``DeletionConfirmed`` on
                   its ``holds`` stage), as accounts does.
                   ``requests_per_s``: N / (first request sent to last ``shredded``);
                   ``p50_to_shredded_s``/``p99_to_shredded_s``: each request's time from
                   its send to its ``shredded`` row in stage_history.
                   Baseline of all three: each stand-in store ALONE answering the same
                   N EraseSubject commands pre-filled on a scratch deletion.commands
                   copy (its consumer started and assigned, to N receipts acknowledged
                   and offsets committed), one store after another, the three times
                   summed (the rate's baseline is N / that sum).

Only grace (0) and notices (off, as docs/configuration.md says for benchmarks) differ
from the service's defaults: the ticker runs every 1 s as deployed. A live backup
snapshot is registered in the scratch database, so shredded requests wait in
``backups_pending`` as they would in production, and the verifier (which restores
dumps) stays out of the measurement. A warm-up request goes through the whole saga
before each timed burst, so the processes' start and group joins are not timed.
Everything scratch (databases, topics, processes) is removed afterwards; consumer
groups are left, as by every benchmark (aiokafka cannot delete them). Goals are this
module's choice (the issue names none): rate >= 0.3, as the other service benchmarks;
p50 and p99 <= 3 times the stores' summed time.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from uuid import UUID

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import NewTopic

from bench.harness import (
    REPO,
    BenchContext,
    BenchFn,
    Result,
    log,
    rate,
    scratch_database,
    started,
    unique,
    wait_until,
)
from services.deletion.bootstrap import DATABASE, MIGRATIONS
from services.deletion.config import DeletionSettings
from services.deletion.domain.retention import load_policy
from shared.bus import Delivery, read_record
from shared.bus.kafka_options import manual_commit_consumer, reliable_producer
from shared.bus.scratch import created_topics
from shared.config import PlatformSettings
from shared.db.migrations import apply_migrations, migration_files
from shared.db.prepare import BUS_MIGRATIONS, VAULT_MIGRATIONS
from shared.events import Event, encode_envelope, envelope_for
from shared.events.catalogue.accounts import DeletionConfirmed, DeletionRequested
from shared.events.catalogue.deletion import DeletionStageChanged, EraseSubject, SubjectErased
from shared.events.topics import (
    ACCOUNTS_LIFECYCLE,
    DELETION_COMMANDS,
    DELETION_RECEIPTS,
    DELETION_STAGES,
    NOTIFIER_COMMANDS,
    Topic,
    dlq_of,
)

NAME = "deletion.saga"
STORES = ("accounts", "notifier", "analytics")
EVENTS_PER_REQUEST = 50  # 50,000 events (the bench default) -> 1,000 requests
MIN_REQUESTS = 10
RATE_GOAL = ">= 0.3"
LATENCY_GOAL = "<= 3"
# What the saga's processes publish or consume: each gets a scratch copy.
SAGA_TOPICS = (ACCOUNTS_LIFECYCLE, DELETION_COMMANDS, DELETION_RECEIPTS, DELETION_STAGES,
               NOTIFIER_COMMANDS)  # fmt: skip
SAGA_DLQS = (ACCOUNTS_LIFECYCLE, DELETION_RECEIPTS)  # the worker's consumers dead-letter here
VAULT_DSN_ENV = "BENCH_DELETION_VAULT_DSN"


def request_count(ctx: BenchContext) -> int:
    return max(MIN_REQUESTS, ctx.events // EVENTS_PER_REQUEST)


# -- scratch topics --------------------------------------------------------------------


@asynccontextmanager
async def scratch_copies(
    settings: PlatformSettings, topics: Sequence[Topic], dlqs: Sequence[Topic] = ()
) -> AsyncIterator[str]:
    """Copies ``<topic><suffix>`` (same partitions and config) and DLQs; their suffix."""
    suffix = f".bench{uuid.uuid4().hex[:10]}"
    new = [NewTopic(t.name + suffix, t.partitions, 1, topic_configs=t.config()) for t in topics]
    new += [NewTopic(dlq_of(t.name + suffix), 1, 1) for t in dlqs]
    async with created_topics(settings, new):
        yield suffix


# -- the stand-in stores (a bench helper, not the services) ------------------------------


class StandInStore:
    """BENCH HELPER: answers every EraseSubject on its consumer with a SubjectErased,
    and, given ``lifecycle_topic``, every ``holds`` stage with a DeletionConfirmed.

    Per fetched batch: one answer per command or stage sent (send, then gather the
    acks), then the batch's offsets committed; ``answered`` counts receipts acknowledged.
    """

    def __init__(
        self,
        name: str,
        consumer: AIOKafkaConsumer,
        producer: AIOKafkaProducer,
        receipts_topic: str,
        lifecycle_topic: str | None = None,
    ) -> None:
        self.name = name
        self._consumer = consumer
        self._producer = producer
        self._receipts = receipts_topic
        self._lifecycle = lifecycle_topic
        self._stopping = asyncio.Event()
        self.answered = 0

    def stop(self) -> None:
        self._stopping.set()

    async def run(self) -> None:
        consumer = self._consumer
        while not self._stopping.is_set():
            batches = await consumer.getmany(timeout_ms=100)
            if not batches:
                continue
            pending, confirmations = [], []
            for records in batches.values():
                for r in records:
                    read = read_record(r.value, r.key, r.topic, r.partition, r.offset)
                    if not isinstance(read, Delivery):
                        continue
                    if isinstance(read.event, EraseSubject):
                        pending.append(await self._answer(read.event))
                    elif isinstance(read.event, DeletionStageChanged):
                        confirmations.extend(await self._confirm(read.event))
            await asyncio.gather(*pending, *confirmations)
            await consumer.commit({tp: recs[-1].offset + 1 for tp, recs in batches.items()})
            self.answered += len(pending)

    async def _confirm(self, changed: DeletionStageChanged) -> list[asyncio.Future[object]]:
        if self._lifecycle is None or changed.stage != "holds":
            return []
        confirmed = DeletionConfirmed(user_id=changed.subject_id, request_id=changed.request_id)
        return [
            await _send(self._producer, self._lifecycle, confirmed, changed.subject_id, self.name)
        ]

    async def _answer(self, command: EraseSubject) -> asyncio.Future[object]:
        receipt = SubjectErased(
            request_id=command.request_id,
            subject_id=command.subject_id,
            store=self.name,
            erased={f"{self.name}_rows": 1},
            retained_anonymised={c: 1 for c in command.retain_categories}
            if self.name == "accounts"
            else {},
            erased_at=datetime.now(UTC),
        )
        return await _send(self._producer, self._receipts, receipt, command.subject_id, self.name)


async def _send(
    producer: AIOKafkaProducer, topic: str, event: Event, subject: UUID, source: str
) -> asyncio.Future[object]:
    """Queue one event (keyed by its subject); the returned future is its ack."""
    envelope = envelope_for(event, source=source, subject=str(subject))
    future: asyncio.Future[object] = await producer.send(
        topic, encode_envelope(envelope), key=envelope.key(), headers=envelope.headers()
    )
    return future


@asynccontextmanager
async def stores_running(settings: PlatformSettings, suffix: str) -> AsyncIterator[None]:
    """The three stand-in stores on the saga's scratch topics, each its own group."""
    async with (
        started(reliable_producer(settings)) as p1,
        started(reliable_producer(settings)) as p2,
        started(reliable_producer(settings)) as p3,
    ):
        # The accounts stand-in also reads the stages, to close cancel windows.
        consumers = [
            manual_commit_consumer(
                settings,
                DELETION_COMMANDS.name + suffix,
                *([DELETION_STAGES.name + suffix] if n == "accounts" else []),
                group_id=unique(f"bench-store-{n}"),
            )
            for n in STORES
        ]
        lifecycle = ACCOUNTS_LIFECYCLE.name + suffix
        stores = [
            StandInStore(
                n, c, p, DELETION_RECEIPTS.name + suffix, lifecycle if n == "accounts" else None
            )
            for n, c, p in zip(STORES, consumers, (p1, p2, p3), strict=True)
        ]
        for c in consumers:
            await c.start()
        tasks = [asyncio.create_task(s.run()) for s in stores]
        try:
            yield
        finally:
            for s in stores:
                s.stop()
            await asyncio.gather(*tasks, return_exceptions=True)
            for c in consumers:
                await c.stop()


# -- baseline: each store alone --------------------------------------------------------


def _retain_categories() -> tuple[str, ...]:
    return load_policy(DeletionSettings().deletion_retention_file).retain_categories()


async def stores_alone(settings: PlatformSettings, n: int) -> float:
    """Seconds for each stand-in store alone to answer n EraseSubject, summed."""
    retain = _retain_categories()
    async with scratch_copies(settings, (DELETION_COMMANDS, DELETION_RECEIPTS)) as suffix:
        commands, receipts = DELETION_COMMANDS.name + suffix, DELETION_RECEIPTS.name + suffix
        async with started(reliable_producer(settings)) as producer:
            pending = []
            for _ in range(n):
                subject = uuid.uuid4()
                command = EraseSubject(
                    request_id=uuid.uuid4(), subject_id=subject, retain_categories=retain
                )
                pending.append(await _send(producer, commands, command, subject, "deletion"))
            await asyncio.gather(*pending)
        times = [await _one_store_alone(settings, name, commands, receipts, n) for name in STORES]
    total = sum(times)
    detail = ", ".join(f"{name} {t:.2f}s" for name, t in zip(STORES, times, strict=True))
    log(f"  stores alone: {total:.2f}s for {n:,} commands each ({detail})")
    return total


async def _one_store_alone(
    settings: PlatformSettings, name: str, commands: str, receipts: str, n: int
) -> float:
    consumer = manual_commit_consumer(settings, group_id=unique(f"bench-store-{name}"))
    async with started(reliable_producer(settings)) as producer, started(consumer):
        # Assigned, not subscribed: no group join in the timing (the saga's stores are
        # warm); the group id is only where the offsets are committed.
        consumer.assign([TopicPartition(commands, p) for p in range(DELETION_COMMANDS.partitions)])
        store = StandInStore(name, consumer, producer, receipts)
        t0 = time.perf_counter()
        task = asyncio.create_task(store.run())
        try:
            await wait_until(
                lambda: store.answered >= n or task.done(), 60.0, f"{name} answering alone"
            )
            elapsed = time.perf_counter() - t0
        finally:
            store.stop()
            await task
    if store.answered != n:
        raise RuntimeError(f"stand-in {name} answered {store.answered}, expected {n}")
    return elapsed


# -- the saga --------------------------------------------------------------------------


@dataclass(frozen=True)
class SagaRun:
    per_s: float
    p50_s: float
    p99_s: float


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


async def _prepare_databases(dsn: str, vault_dsn: str) -> None:
    """Migrate both scratch databases; register a live snapshot (requests then wait in
    backups_pending, as with production's 35-day backups, instead of being verified)."""
    conn = await asyncpg.connect(dsn)
    try:
        sources = migration_files("bus", BUS_MIGRATIONS) + migration_files(DATABASE, MIGRATIONS)
        await apply_migrations(conn, sources)
        await conn.execute(
            "INSERT INTO backup_snapshots (snapshot_id, taken_at, expires_at, completed_at,"
            " databases, path) VALUES ('bench-live', now() - interval '1 hour',"
            " now() + interval '35 days', now() - interval '1 hour', '{}', '/nonexistent')"
        )
    finally:
        await conn.close()
    conn = await asyncpg.connect(vault_dsn)
    try:
        await apply_migrations(conn, migration_files("vault", VAULT_MIGRATIONS))
    finally:
        await conn.close()


@asynccontextmanager
async def saga_processes(
    dsn: str, vault_dsn: str, suffix: str, workdir: Path
) -> AsyncIterator[list[tuple[asyncio.subprocess.Process, Path]]]:
    """The deletion worker and relay, as processes on the scratch database and topics."""
    env = {
        **os.environ,
        "PYTHONPATH": str(REPO),
        "IMT_DELETION_DATABASE_DSN": dsn,
        "IMT_DELETION_TOPIC_SUFFIX": suffix,
        "IMT_DELETION_GRACE_SECONDS": "0",
        "IMT_DELETION_NOTICES": "false",
        "IMT_DELETION_BACKUP_DIR": str(workdir / "backups"),
        VAULT_DSN_ENV: vault_dsn,
    }
    procs: list[tuple[asyncio.subprocess.Process, Path]] = []
    try:
        for role in ("worker", "relay"):
            output = workdir / f"{role}.log"
            with output.open("wb") as log_file:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "bench.deletion", role,
                    cwd=REPO, env=env, stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_file, stderr=log_file,
                )  # fmt: skip
            procs.append((proc, output))
        yield procs
    finally:
        for proc, _ in procs:
            await _end(proc)


async def _end(proc: asyncio.subprocess.Process) -> None:
    """SIGTERM (the processes stop their loops), then SIGKILL if they linger."""
    for signal_it in (proc.terminate, proc.kill):
        if proc.returncode is not None:
            return
        signal_it()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            continue


async def _wait_shredded(
    conn: asyncpg.Connection,
    count: int,
    within: float,
    procs: Sequence[tuple[asyncio.subprocess.Process, Path]],
) -> None:
    """Poll (one count query every 50 ms) until ``count`` requests were shredded."""
    deadline = time.perf_counter() + within
    while True:
        done = await conn.fetchval("SELECT count(*) FROM stage_history WHERE stage = 'shredded'")
        if done >= count:
            return
        for proc, output in procs:
            if proc.returncode is not None:
                tail = output.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"saga process exited {proc.returncode}:\n{tail}")
        if time.perf_counter() > deadline:
            stages = await conn.fetch("SELECT stage, count(*) FROM deletion_requests GROUP BY 1")
            found = {r["stage"]: r["count"] for r in stages}
            raise TimeoutError(f"{done}/{count} shredded after {within:.0f}s; stages {found}")
        await asyncio.sleep(0.05)


async def _request(
    producer: AIOKafkaProducer, topic: str, subject: UUID
) -> tuple[UUID, datetime, asyncio.Future[object]]:
    request_id = uuid.uuid4()
    event = DeletionRequested(user_id=subject, request_id=request_id, initiated_by="user")
    sent_at = datetime.now(UTC)
    return request_id, sent_at, await _send(producer, topic, event, subject, "accounts")


async def saga(ctx: BenchContext, n: int) -> SagaRun:
    settings = ctx.settings
    async with (
        scratch_database(settings) as dsn,
        scratch_database(settings) as vault_dsn,
        scratch_copies(settings, SAGA_TOPICS, SAGA_DLQS) as suffix,
    ):
        await _prepare_databases(dsn, vault_dsn)
        lifecycle = ACCOUNTS_LIFECYCLE.name + suffix
        conn = await asyncpg.connect(dsn)
        try:
            with tempfile.TemporaryDirectory(prefix="bench-deletion-") as tmp:
                async with (
                    stores_running(settings, suffix),
                    saga_processes(dsn, vault_dsn, suffix, Path(tmp)) as procs,
                    started(reliable_producer(settings)) as producer,
                ):
                    warm = time.perf_counter()
                    _, _, ack = await _request(producer, lifecycle, uuid.uuid4())
                    await ack
                    await _wait_shredded(conn, 1, 120.0, procs)
                    log(f"  warm-up request shredded {time.perf_counter() - warm:.1f}s after start")
                    sent = [await _request(producer, lifecycle, uuid.uuid4()) for _ in range(n)]
                    await asyncio.gather(*(ack for _, _, ack in sent))
                    await _wait_shredded(conn, n + 1, ctx.timeout, procs)
            rows = await conn.fetch(
                "SELECT request_id, stage, entered_at FROM stage_history"
                " WHERE stage IN ('requested', 'erasing', 'shredded')"
            )
        finally:
            await conn.close()
    entered: dict[str, dict[UUID, datetime]] = {}
    for r in rows:
        entered.setdefault(r["stage"], {})[r["request_id"]] = r["entered_at"]
    shredded = entered["shredded"]

    def since_sent(stage: str) -> list[float]:
        return [(entered[stage][rid] - at).total_seconds() for rid, at, _ in sent]

    latencies = since_sent("shredded")
    window = (max(shredded[rid] for rid, _, _ in sent) - sent[0][1]).total_seconds()
    run = SagaRun(rate(n, window), percentile(latencies, 50), percentile(latencies, 99))
    log(
        f"  saga: {run.per_s:,.1f} requests/s ({n:,} in {window:.2f}s), to shredded "
        f"p50 {run.p50_s:.2f}s, p99 {run.p99_s:.2f}s, max {max(latencies):.2f}s; p50 to "
        f"requested {percentile(since_sent('requested'), 50):.2f}s, "
        f"erasing {percentile(since_sent('erasing'), 50):.2f}s"
    )
    return run


# -- the benchmark ---------------------------------------------------------------------


async def bench_saga(ctx: BenchContext) -> list[Result]:
    n = request_count(ctx)

    totals: list[float] = []  # baseline: seconds of the stores alone, summed
    saga_runs: list[SagaRun] = []
    for i in range(ctx.repeats):  # interleaved, as bench.harness.interleaved
        log(f"{NAME}: run {i + 1}/{ctx.repeats} baseline ({n:,} commands per store)")
        totals.append(await stores_alone(ctx.settings, n))
        log(f"{NAME}: run {i + 1}/{ctx.repeats} value ({n:,} requests)")
        saga_runs.append(await saga(ctx, n))
    defaults = DeletionSettings()
    extra = {
        "requests": n,
        "grace_seconds": 0,
        "tick_seconds": defaults.deletion_tick_seconds,
        "baseline_kind": (
            f"sum over the 3 stand-in stores (accounts, notifier, analytics) of each one "
            f"alone answering the same {n:,} EraseSubject commands with SubjectErased "
            "receipts (pre-filled scratch topic; consumer assigned; to all receipts acked "
            "and offsets committed); rate baseline = requests / that sum"
        ),
        "value_kind": (
            "DeletionRequested burst on scratch topics -> real deletion worker + relay "
            "(processes, scratch DBs) -> the same stand-in stores -> stage 'shredded'"
        ),
    }
    return [
        Result(NAME, "requests_per_s", [r.per_s for r in saga_runs],
               [rate(n, t) for t in totals], "requests/s", RATE_GOAL, extra),
        Result(NAME, "p50_to_shredded_s", [r.p50_s for r in saga_runs], totals, "s",
               LATENCY_GOAL, extra),
        Result(NAME, "p99_to_shredded_s", [r.p99_s for r in saga_runs], totals, "s",
               LATENCY_GOAL, extra),
    ]  # fmt: skip


BENCHMARKS: dict[str, BenchFn] = {NAME: bench_saga}


# -- the saga's processes: ``python -m bench.deletion worker|relay`` ----------------------


async def _run_worker(settings: DeletionSettings) -> None:
    """services.deletion.worker.run_worker, with the vault on the scratch database."""
    from services.deletion.bootstrap import dependencies
    from services.deletion.worker import Worker
    from shared.db.pool import create_pool
    from shared.service import open_runtime
    from shared.vault import Vault

    runtime = await open_runtime(
        settings, DATABASE, MIGRATIONS, with_vault=False, with_producer=True
    )
    try:
        runtime.vault_pool = await create_pool(os.environ[VAULT_DSN_ENV])
        runtime.vault = await Vault.connect(settings, runtime.vault_pool)
        worker = Worker(settings, runtime, dependencies(settings, runtime))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        await worker.run()
    finally:
        await runtime.close()


async def _run_relay(settings: DeletionSettings) -> None:
    """shared.service.relay's loop, on the deletion database the settings name."""
    from shared.bus.relay import OutboxRelay

    async with started(reliable_producer(settings)) as producer:
        relay = OutboxRelay(settings.database_dsn(DATABASE), producer)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, relay.stop)
        await relay.run()


def main(argv: Sequence[str] | None = None) -> None:
    from shared.process import start_process

    parser = argparse.ArgumentParser(prog="python -m bench.deletion")
    parser.add_argument("role", choices=("worker", "relay"))
    role = parser.parse_args(argv).role
    settings = DeletionSettings(service_name=f"bench-deletion-{role}")
    start_process(settings.service_name, settings.log_level)
    asyncio.run(_run_worker(settings) if role == "worker" else _run_relay(settings))


if __name__ == "__main__":
    main()
