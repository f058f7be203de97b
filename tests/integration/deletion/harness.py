"""The deletion orchestrator on real Kafka and PostgreSQL, isolated for one test.

Each harness has its own deletion database (a scratch one), its own copies of the
topics (``<topic>.<suffix>``, which the bus accepts as derived topics), the real vault,
a relay and the worker. ``StandInStores`` are a TEST HELPER, never a service: they
really consume the EraseSubject commands on Kafka and answer SubjectErased receipts,
as accounts, notifier and analytics will, but only for subjects the test registered.
Like accounts, they also close a request's cancel window (``DeletionConfirmed``) when
its ``holds`` stage is announced, unless the test keeps that request's window open.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import asyncpg
import httpx
from aiokafka import AIOKafkaProducer
from fastapi import FastAPI

from services.deletion.bootstrap import bootstrap, dependencies
from services.deletion.config import DeletionSettings
from services.deletion.context import Context
from services.deletion.handlers import Deps
from services.deletion.routes import operators
from services.deletion.worker import Worker
from shared.auth import issue_token
from shared.bus import (
    Delivery,
    OutboxRelay,
    manual_commit_consumer,
    read_record,
    reliable_producer,
)
from shared.bus.scratch import scratch_copies
from shared.config import DEV_TOKEN_PRIVATE_KEY, DEV_TOKEN_PUBLIC_KEY
from shared.events import Event, encode_envelope, envelope_for
from shared.events.catalogue.accounts import DeletionConfirmed, DeletionRequested
from shared.events.catalogue.deletion import DeletionStageChanged, EraseSubject, SubjectErased
from shared.observability import install_problem_handlers
from shared.service import Runtime

BASE_TOPICS = (
    "accounts.lifecycle",
    "accounts.contacts",
    "deletion.commands",
    "deletion.receipts",
    "deletion.stages",
    "notifier.commands",
)
STORES = ("accounts", "notifier", "analytics")


def scratch_topics(settings: DeletionSettings) -> AbstractAsyncContextManager[str]:
    """Copies of the deletion's topics under a fresh suffix; deleted afterwards."""
    dead_letters = ("accounts.lifecycle", "deletion.receipts")
    return scratch_copies(settings, BASE_TOPICS, partitions=3, dead_letters=dead_letters)


def short_financial_rules(folder: Path, seconds: float) -> str:
    """A retention file keeping financial records ``seconds`` only; its path."""
    rules = folder / "retention.toml"
    rules.write_text(
        'version = "short"\n[[rule]]\ncategory = "financial_records"\nlegal_basis = "financial"\n'
        f'period_days = {seconds / 86400!r}\naction = "keep_anonymised"\n'
    )
    return str(rules)


def harness_settings(dsn: str, suffix: str, backups: Path, **overrides: Any) -> DeletionSettings:
    values: dict[str, Any] = {
        "environment": "test",
        "deletion_database_dsn": dsn,
        "deletion_topic_suffix": suffix,
        "deletion_grace_seconds": 0,
        "deletion_tick_seconds": 0.1,
        "deletion_retry_seconds": 0.5,
        "deletion_store_timeout_seconds": 20,
        # By its alias: the field's own name is ignored, and the tests would share (and
        # remove, and fill with broken snapshots) the state dir's backups.
        "IMT_DELETION_BACKUP_DIR": str(backups),
        "deletion_backup_poll_seconds": 0.5,
        "deletion_verify_lease_seconds": 5,
    }
    values.update(overrides)
    settings = DeletionSettings(**values)
    assert settings.backup_dir() == Path(values["IMT_DELETION_BACKUP_DIR"])
    return settings


async def send(
    producer: AIOKafkaProducer, settings: DeletionSettings, event: Event, key: UUID
) -> None:
    envelope = envelope_for(event, source="test", subject=str(key))
    await producer.send_and_wait(
        settings.topic(event.topic.name),
        encode_envelope(envelope),
        key=envelope.key(),
        headers=envelope.headers(),
    )


@dataclass
class StandInStores:
    """TEST HELPER: store owners answering EraseSubject over real Kafka (not a service)."""

    settings: DeletionSettings
    producer: AIOKafkaProducer
    names: tuple[str, ...] = STORES
    subjects: set[UUID] = field(default_factory=set)
    silent: set[str] = field(default_factory=set)  # stores that never answer
    ignore_first: int = 0  # commands each store ignores before answering (tests resends)
    commands: Counter[UUID] = field(default_factory=Counter)  # per request id
    seen: list[EraseSubject] = field(default_factory=list)
    windows_kept_open: set[UUID] = field(default_factory=set)  # requests never confirmed
    requested: set[UUID] = field(default_factory=set)  # request ids: any other is a release
    # subject -> stores that never answer the subject's retention releases (dead-lettered)
    releases_unanswered_by: dict[UUID, set[str]] = field(default_factory=dict)
    # subject -> what accounts' receipt dates (SubjectErased.retained_until)
    kept_until: dict[UUID, dict[str, date]] = field(default_factory=dict)

    async def run(self, stop: asyncio.Event) -> None:
        consumer = manual_commit_consumer(
            self.settings,
            self.settings.topic("deletion.commands"),
            self.settings.topic("deletion.stages"),
            group_id=f"stand-in-{uuid.uuid4().hex[:8]}",
        )
        await consumer.start()
        try:
            while not stop.is_set():
                batches = await consumer.getmany(timeout_ms=200)
                for records in batches.values():
                    for r in records:
                        read = read_record(r.value, r.key, r.topic, r.partition, r.offset)
                        if isinstance(read, Delivery) and isinstance(read.event, EraseSubject):
                            await self._answer(read.event)
                        elif isinstance(read, Delivery) and isinstance(
                            read.event, DeletionStageChanged
                        ):
                            await self._close_window(read.event)
        finally:
            await consumer.stop()

    async def _close_window(self, changed: DeletionStageChanged) -> None:
        if (
            changed.stage != "holds"
            or changed.subject_id not in self.subjects
            or changed.request_id in self.windows_kept_open
        ):
            return
        confirmed = DeletionConfirmed(user_id=changed.subject_id, request_id=changed.request_id)
        await send(self.producer, self.settings, confirmed, changed.subject_id)

    async def _answer(self, command: EraseSubject) -> None:
        if command.subject_id not in self.subjects:
            return
        self.seen.append(command)
        self.commands[command.request_id] += 1
        if self.commands[command.request_id] <= self.ignore_first:
            return
        silent = set(self.silent)
        if command.request_id not in self.requested:
            silent |= self.releases_unanswered_by.get(command.subject_id, set())
        for store in self.names:
            if store in silent:
                continue
            receipt = SubjectErased(
                request_id=command.request_id,
                subject_id=command.subject_id,
                store=store,
                erased={f"{store}_rows": 1},
                retained_anonymised={c: 1 for c in command.retain_categories}
                if store == "accounts"
                else {},
                erased_at=datetime.now(UTC),
                retained_until=self.kept_until.get(command.subject_id, {})
                if store == "accounts" and command.retain_categories
                else {},
            )
            await send(self.producer, self.settings, receipt, command.subject_id)


@dataclass
class Harness:
    settings: DeletionSettings
    runtime: Runtime
    producer: AIOKafkaProducer
    stores: StandInStores

    @property
    def pool(self) -> asyncpg.Pool:
        return self.runtime.pool

    async def request_deletion(
        self,
        subject: UUID | None = None,
        *,
        scope: str = "account",
        item_id: UUID | None = None,
    ) -> tuple[UUID, UUID]:
        subject = subject or uuid.uuid4()
        request_id = uuid.uuid4()
        self.stores.subjects.add(subject)
        self.stores.requested.add(request_id)
        event = DeletionRequested(
            user_id=subject,
            request_id=request_id,
            initiated_by="user",
            scope=scope,
            item_id=item_id,
        )
        await send(self.producer, self.settings, event, subject)
        return request_id, subject

    async def stage(self, request_id: UUID) -> str | None:
        value = await self.pool.fetchval(
            "SELECT stage FROM deletion_requests WHERE request_id = $1", request_id
        )
        return None if value is None else str(value)

    async def wait_for(
        self, request_ids: Iterable[UUID], stage: str, timeout: float = 60.0
    ) -> dict[UUID, str | None]:
        ids = list(request_ids)
        deadline = time.monotonic() + timeout
        while True:
            stages = {i: await self.stage(i) for i in ids}
            if all(s == stage for s in stages.values()) or time.monotonic() > deadline:
                return stages
            await asyncio.sleep(0.1)

    async def release_of(self, request_id: UUID, timeout: float = 60.0) -> EraseSubject:
        """The retention release the stores got after ``request_id``'s own erasure."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            later = [c for c in self.stores.seen if c.request_id != request_id]
            if later:
                return later[0]
            await asyncio.sleep(0.1)
        raise AssertionError(f"no release followed {request_id} within {timeout} s")

    async def history(self, request_id: UUID) -> list[str]:
        rows = await self.pool.fetch(
            "SELECT stage FROM stage_history WHERE request_id = $1 ORDER BY id", request_id
        )
        return [r["stage"] for r in rows]


@asynccontextmanager
async def running_harness(
    settings: DeletionSettings, *, with_worker: bool = True
) -> AsyncIterator[Harness]:
    runtime = await bootstrap(settings, with_producer=True)
    producer = reliable_producer(settings)
    await producer.start()
    assert settings.deletion_database_dsn is not None
    relay = OutboxRelay(settings.deletion_database_dsn, producer)
    stores = StandInStores(settings, producer)
    stop = asyncio.Event()
    tasks = [asyncio.create_task(relay.run()), asyncio.create_task(stores.run(stop))]
    worker = Worker(settings, runtime, dependencies(settings, runtime)) if with_worker else None
    if worker is not None:
        tasks.append(asyncio.create_task(worker.run()))
    try:
        yield Harness(settings, runtime, producer, stores)
    finally:
        stop.set()
        relay.stop()
        if worker is not None:
            worker.stop()
        await asyncio.gather(*tasks)
        await producer.stop()
        await runtime.close()


@asynccontextmanager
async def operator_api(
    settings: DeletionSettings, harness: Harness, deps: Deps
) -> AsyncIterator[tuple[httpx.AsyncClient, dict[str, str]]]:
    """The deletion API's operator routes on the harness's runtime, over ASGI, and a
    privacy officer's headers for them."""
    app = FastAPI()
    install_problem_handlers(app)
    app.state.token_public_key = DEV_TOKEN_PUBLIC_KEY
    app.state.deletion = Context(settings, harness.runtime, deps)
    app.include_router(operators.router)
    token = issue_token(
        DEV_TOKEN_PRIVATE_KEY, subject=str(uuid.uuid4()), session_id="s", kind="operator",
        ttl=timedelta(minutes=5), roles=("privacy_officer",),
    )  # fmt: skip
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        yield client, {"Authorization": f"Bearer {token}"}


async def unowned_database(settings: DeletionSettings, name: str) -> None:
    """A database ``name`` no process owns (:mod:`services.deletion.copy_locks`): as a
    killed maker leaves a copy, or as a copy of no one's."""
    conn = await asyncpg.connect(settings.admin_dsn("postgres"))
    try:
        await conn.execute(f'CREATE DATABASE "{name}"')
    finally:
        await conn.close()


async def copy_holding(settings: DeletionSettings, name: str, subject: UUID) -> None:
    """A database ``name`` as a copy made before the subject's erasure leaves it: one
    table, the subject's row in it. The caller drops it (``backups.drop_databases``)."""
    await unowned_database(settings, name)
    conn = await asyncpg.connect(settings.admin_dsn(name))
    try:
        await conn.execute("CREATE TABLE visits (visitor uuid, page text)")
        await conn.execute("INSERT INTO visits VALUES ($1, '/home')", subject)
    finally:
        await conn.close()
