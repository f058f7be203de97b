"""Notifier benchmarks: the breach fan-out (P-17) and email sending.

``notifier.breach_fanout``  An ``IncidentDeclared`` for every active user (100,000
                            contacts in a scratch notifier database), published to a
                            scratch ``security.incidents.*`` topic and applied by the
                            real consumer and handler until its transaction committed
                            every pinned inbox item; against a raw COPY of the same
                            rows into the same table, inbox_items, with the unique key
                            the idempotency rule requires and its indexes (ratio = our
                            time / COPY time, goal <= 3); and, for insight, against a
                            raw COPY into an unindexed table.
``notifier.email_rate``     The real Sender (lease, decide, vault, render, gate, SMTP,
                            record with NoticeDelivered on the outbox) sending N emails
                            over ``notifier_smtp_connections`` connections, against a
                            raw aiosmtplib loop over the same number of connections
                            sending the same number of prebuilt messages; emails/s
                            (goal >= 0.7). Both go to a private SMTP sink (STARTTLS)
                            started for the run, so the shared mailbox is not flooded.
                            The send-rate limit is set too high to throttle (it is a
                            policy, not a cost), but its slots are still taken from the
                            shared bucket in PostgreSQL, as in production. Each run
                            sends the N emails in slices, raw and ours alternating
                            (ABBA), each side connecting afresh per slice; ours with a
                            vault whose key cache is cold, as when mailing many users.
                            One unmeasured round of each side comes first.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

import aiosmtplib
import asyncpg
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from bench.harness import (
    INFORMATIVE,
    REPO,
    BenchContext,
    BenchFn,
    Result,
    interleaved,
    log,
    rate,
    scratch_database,
    started,
    wait_until,
)
from services.notifier import handlers
from services.notifier.bootstrap import MIGRATIONS
from services.notifier.config import NotifierSettings
from services.notifier.domain.compliance import OutgoingEmail
from services.notifier.domain.templates import Footer, Renderer
from services.notifier.mailer import SmtpTransport, build_message, tls_context
from services.notifier.sender import Sender, Wake
from shared.bus.consumer import IdempotentConsumer
from shared.bus.kafka_options import client_options, manual_commit_consumer, reliable_producer
from shared.db.migrations import apply_migrations, migration_files
from shared.db.pool import Connection, create_pool
from shared.db.prepare import VAULT_MIGRATIONS
from shared.events import encode_envelope, envelope_for
from shared.events.catalogue.accounts import IncidentDeclared
from shared.events.topics import SECURITY_INCIDENTS, dlq_of
from shared.vault import Vault

BREACH_USERS = 100_000
# The email rate's runs are taken in slices, the raw loop and the sender alternating
# (ABBA), so a neighbour's burst of load on this shared machine lands on both sides
# alike instead of on one whole run (it swung the ratio between 0.5 and 0.9).
EMAIL_SLICES = 4
COPY_BASELINE_DDL = "CREATE TABLE copy_baseline (user_id uuid, notice_id uuid, pinned boolean)"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _migrate(dsn: str, sources: Sequence[tuple[str, Path]]) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await apply_migrations(conn, sources)
    finally:
        await conn.close()


@asynccontextmanager
async def incidents_topic(settings: NotifierSettings) -> AsyncIterator[str]:
    """A fresh ``security.incidents.bench-<hex>`` topic (the handler accepts derived names)."""
    name = f"{SECURITY_INCIDENTS.name}.bench-{uuid.uuid4().hex[:10]}"
    admin = AIOKafkaAdminClient(**client_options(settings))
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, 1, 1), NewTopic(dlq_of(name), 1, 1)])
        try:
            for _ in range(100):
                described = await admin.describe_topics([name, dlq_of(name)])
                if all(t["partitions"] and t["partitions"][0]["leader"] >= 0 for t in described):
                    break
                await asyncio.sleep(0.1)
            yield name
        finally:
            await admin.delete_topics([name, dlq_of(name)])
    finally:
        await admin.close()


# -- breach fan-out ----------------------------------------------------------------------


async def breach_fanout(ctx: BenchContext) -> list[Result]:
    settings = NotifierSettings()
    users = [uuid.uuid4() for _ in range(BREACH_USERS)]
    async with scratch_database(settings, [COPY_BASELINE_DDL]) as dsn:
        await _migrate(dsn, migration_files("notifier", MIGRATIONS))
        pool = await create_pool(dsn, min_size=2, max_size=4)
        assert pool is not None
        try:
            async with pool.acquire() as conn:
                await conn.copy_records_to_table(
                    "contacts",
                    records=[(u, b"i", b"e", b"n", "adult") for u in users],
                    columns=["user_id", "email_index", "email", "name", "age_band"],
                )
                await conn.execute("ANALYZE contacts")

            async def copy(conn: Connection, table: str) -> float:
                notice = uuid.uuid4()
                began = time.perf_counter()
                await conn.copy_records_to_table(
                    table,
                    records=[(u, notice, True) for u in users],
                    columns=["user_id", "notice_id", "pinned"],
                )
                return time.perf_counter() - began

            async def baseline(_: int) -> tuple[float, float]:
                async with pool.acquire() as conn:
                    await conn.execute("TRUNCATE inbox_items, copy_baseline")
                    same_table = await copy(conn, "inbox_items")
                    bare_table = await copy(conn, "copy_baseline")
                return same_table, bare_table

            async def value(_: int) -> float:
                async with pool.acquire() as conn:
                    await conn.execute("TRUNCATE inbox_items")
                return await _one_breach(settings, pool, ctx)

            baselines, values = await interleaved(
                ctx.repeats, baseline, value, "notifier.breach_fanout"
            )
        finally:
            await pool.close()
    extra = {"users": BREACH_USERS}
    return [
        Result(
            "notifier.breach_fanout",
            "seconds_to_pin_100k",
            values,
            [same for same, _ in baselines],
            "s",
            "<= 3",
            {**extra, "baseline_kind": "raw COPY of the rows into inbox_items, its keys kept"},
        ),
        Result(
            "notifier.breach_fanout",
            "seconds_to_pin_100k_vs_bare_copy",
            values,
            [bare for _, bare in baselines],
            "s",
            INFORMATIVE,
            {**extra, "baseline_kind": "raw COPY of as many rows into an unindexed table"},
        ),
    ]


async def _one_breach(settings: NotifierSettings, pool: asyncpg.Pool, ctx: BenchContext) -> float:
    async with incidents_topic(settings) as topic:
        producer = reliable_producer(settings)
        kafka = manual_commit_consumer(settings, topic, group_id=f"{topic}.bench")
        consumer = IdempotentConsumer("notifier.bench", kafka, producer, pool, handlers.on_notices)
        async with started(producer), started(kafka):
            task = asyncio.create_task(consumer.run())
            try:
                await asyncio.sleep(1.0)  # group joined; the clock starts at the publish
                incident = IncidentDeclared(
                    incident_id=uuid.uuid4(),
                    title="Bench breach",
                    message="Reset your password.",
                    audience="all",
                )
                envelope = envelope_for(incident, source="bench", subject=None)
                began = time.perf_counter()
                await producer.send_and_wait(topic, encode_envelope(envelope))
                await wait_until(lambda: consumer.applied >= 1, ctx.timeout, "breach fan-out")
                elapsed = time.perf_counter() - began
            finally:
                consumer.stop()
                await task
    async with pool.acquire() as conn:
        pinned = await conn.fetchval("SELECT count(*) FROM inbox_items WHERE pinned")
    if pinned != BREACH_USERS:
        raise AssertionError(f"{pinned} pinned items, expected {BREACH_USERS}")
    log(f"breach fan-out: {BREACH_USERS:,} pinned in {elapsed:.2f}s")
    return elapsed


# -- email sending ---------------------------------------------------------------------


@asynccontextmanager
async def private_sink(settings: NotifierSettings) -> AsyncIterator[int]:
    """The local SMTP sink, on a free port and a temporary maildir, with STARTTLS."""
    tls = Path(settings.state_dir) / "tls"
    port, web = _free_port(), _free_port()
    maildir = tempfile.mkdtemp(prefix="bench-mail-")
    process = subprocess.Popen(  # noqa: ASYNC220 - a daemon started once per benchmark
        [
            sys.executable,
            str(REPO / "deploy/local/smtp_sink.py"),
            "--smtp-port",
            str(port),
            "--web-port",
            str(web),
            "--maildir",
            maildir,
            "--tls-cert",
            str(tls / "server.pem"),
            "--tls-key",
            str(tls / "server-key.pem"),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for _ in range(100):
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            except OSError:
                await asyncio.sleep(0.1)
        yield port
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(maildir, ignore_errors=True)


async def email_rate(ctx: BenchContext) -> list[Result]:
    count = max(200, ctx.events // 25)
    base = NotifierSettings()
    async with private_sink(base) as port:
        settings = base.model_copy(
            update={"notifier_smtp_port": port, "notifier_send_rate_per_second": 1e9}
        )
        async with scratch_database(settings) as dsn, scratch_database(settings) as vault_dsn:
            await _migrate(dsn, migration_files("notifier", MIGRATIONS))
            await _migrate(vault_dsn, migration_files("vault", VAULT_MIGRATIONS))
            pool = await create_pool(dsn, min_size=2, max_size=10)
            vault_pool = await create_pool(vault_dsn, min_size=2, max_size=10)
            assert pool is not None
            assert vault_pool is not None
            try:
                async with _vault(settings, vault_pool) as vault:
                    users = await _seal_contacts(pool, vault, count)
                for each in (pool, vault_pool):  # statistics now, not autovacuum mid-run
                    async with each.acquire() as conn:
                        await conn.execute("VACUUM ANALYZE")
                slices = [users[i::EMAIL_SLICES] for i in range(EMAIL_SLICES)]

                async def baseline(part: list[uuid.UUID]) -> float:
                    return await _raw_smtp(settings, len(part))

                async def value(part: list[uuid.UUID]) -> float:
                    # A fresh vault each time: its key cache starts cold, as in a worker
                    # mailing many users. The one that sealed the contacts caches their
                    # keys for 30 s, which made the first runs faster than the others.
                    async with _vault(settings, vault_pool) as vault:
                        return await _through_sender(settings, pool, vault, part, ctx)

                # Unmeasured: first connections, lazy imports, a fresh sink and the
                # database's work after the seeding land on whichever side ran first
                # (the first run was the slowest of both sides, every time).
                log("notifier.email_rate: warm-up")
                await _alternating(slices, baseline, value, flip=True)
                baselines, values = [], []
                for i in range(ctx.repeats):
                    log(f"notifier.email_rate: run {i + 1}/{ctx.repeats}")
                    raw, ours = await _alternating(slices, baseline, value, flip=i % 2 == 1)
                    log(f"  raw {rate(count, raw):.0f}/s, sender {rate(count, ours):.0f}/s")
                    baselines.append(raw)
                    values.append(ours)
            finally:
                await vault_pool.close()
                await pool.close()
    return [
        Result(
            "notifier.email_rate",
            "emails_per_s",
            [rate(count, v) for v in values],
            [rate(count, b) for b in baselines],
            "emails/s",
            ">= 0.7",
            extra={
                "emails": count,
                "connections": settings.notifier_smtp_connections,
                "slices": EMAIL_SLICES,
            },
        )
    ]


async def _alternating(
    slices: Sequence[list[uuid.UUID]],
    baseline: Callable[[list[uuid.UUID]], Awaitable[float]],
    value: Callable[[list[uuid.UUID]], Awaitable[float]],
    *,
    flip: bool,
) -> tuple[float, float]:
    """Both sides over every slice, alternating ABBA: (raw seconds, our seconds)."""
    raw = ours = 0.0
    for n, part in enumerate(slices):
        if (n % 2 == 0) != flip:
            raw += await baseline(part)
            ours += await value(part)
        else:
            ours += await value(part)
            raw += await baseline(part)
    return raw, ours


@asynccontextmanager
async def _vault(settings: NotifierSettings, pool: asyncpg.Pool) -> AsyncIterator[Vault]:
    vault = await Vault.connect(settings, pool)
    try:
        yield vault
    finally:
        await vault.close()


async def _seal_contacts(pool: asyncpg.Pool, vault: Vault, count: int) -> list[uuid.UUID]:
    users = [uuid.uuid4() for _ in range(count)]

    async def sealed(uid: uuid.UUID) -> tuple[object, ...]:
        address = f"bench-{uid.hex[:12]}@example.org"
        return (
            uid,
            handlers.email_index(vault, address),
            await vault.seal(uid, address, purpose=handlers.EMAIL_PURPOSE),
            await vault.seal(uid, "Bench User", purpose=handlers.NAME_PURPOSE),
            "adult",
        )

    records = await asyncio.gather(*(sealed(u) for u in users))
    async with pool.acquire() as conn:
        await conn.copy_records_to_table(
            "contacts",
            records=records,
            columns=["user_id", "email_index", "email", "name", "age_band"],
        )
    return users


async def _through_sender(
    settings: NotifierSettings,
    pool: asyncpg.Pool,
    vault: Vault,
    users: list[uuid.UUID],
    ctx: BenchContext,
) -> float:
    notice = uuid.uuid4()
    async with pool.acquire() as conn:
        await conn.execute(
            "INSERT INTO notices (notice_id, template, category, audience, params, channels,"
            " source, status) VALUES ($1, 'request_reply', 'transactional', 'listed', $2,"
            " '{email}', 'bench', 'fanned_out')",
            notice,
            {"request_id": "bench"},
        )
    sender = Sender(settings, pool, vault, lambda: SmtpTransport(settings), Wake())
    began = time.perf_counter()
    async with pool.acquire() as conn:  # the planning step is part of the path
        await conn.copy_records_to_table(
            "deliveries", records=[(notice, u) for u in users], columns=["notice_id", "user_id"]
        )
    task = asyncio.create_task(sender.run())
    try:
        await wait_until(lambda: sender.finished >= len(users), ctx.timeout, "emails sent")
        elapsed = time.perf_counter() - began
    finally:
        sender.stop()
        await task
    if sender.sent != len(users):
        raise AssertionError(f"{sender.sent} sent, expected {len(users)}")
    return elapsed


async def _raw_smtp(settings: NotifierSettings, count: int) -> float:
    """Prebuilt bytes of the same email, sent with sendmail: the raw library's best case."""
    connections = settings.notifier_smtp_connections
    data = _sample_email(settings)
    context = tls_context(settings)

    async def one_connection(n: int) -> None:
        client = aiosmtplib.SMTP(
            hostname=settings.notifier_smtp_host,
            port=settings.notifier_smtp_port,
            start_tls=True,
            tls_context=context,
        )
        await client.connect()
        for _ in range(n):
            await client.sendmail("service@phonedoctorbiz.com", ["bench-raw@example.org"], data)
        await client.quit()

    shares = [count // connections + (i < count % connections) for i in range(connections)]
    began = time.perf_counter()
    await asyncio.gather(*(one_connection(n) for n in shares))
    return time.perf_counter() - began


def _sample_email(settings: NotifierSettings) -> bytes:
    url = f"{settings.notifier_public_base_url}/api/notifier/unsubscribe/{'A' * 68}"
    rendered = Renderer().email(
        "request_reply",
        category="transactional",
        params={"request_id": "bench"},
        name="Bench User",
        unsubscribe_url=url,
        footer=Footer(
            settings.notifier_public_base_url,
            settings.notifier_postal_address,
            settings.notifier_ad_label,
        ),
    )
    email = OutgoingEmail(
        "transactional",
        settings.notifier_from_transactional,
        settings.notifier_reply_to,
        "bench-raw@example.org",
        rendered.subject,
        rendered.text,
        rendered.html,
        url,
        {
            "List-Unsubscribe": f"<{url}>, <mailto:service@phonedoctorbiz.com>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            "List-Id": settings.notifier_list_id,
        },
    )
    return build_message(email, "<bench@notifier.imt>").data


BENCHMARKS: dict[str, BenchFn] = {
    "notifier.breach_fanout": breach_fanout,
    "notifier.email_rate": email_rate,
}
