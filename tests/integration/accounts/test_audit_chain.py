"""The audit log's hash chain on real PostgreSQL: tampering shows, even by the table's owner.

The tampering here is what the role owning the table can do (and the service's code
cannot): set the append-only triggers aside, change or remove rows, even relink the
whole chain. The published links (the AuditLogAppended events queued in the same
transactions, read here from the outbox) are what the owner cannot rewrite.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from typing import Any
from urllib.parse import parse_qsl

import asyncpg
import pytest
from fastapi import Response
from prometheus_client import CollectorRegistry

from services.accounts import audit_chain, store
from services.accounts.audit_gauges import AuditChainGauges
from services.accounts.bootstrap import DATABASE, MIGRATIONS
from services.accounts.config import AccountsSettings
from services.accounts.context import Context
from services.accounts.routes import operators
from shared.bus import reliable_producer
from shared.bus.scratch import scratch_copies
from shared.config import PlatformSettings
from shared.db.migrations import apply_migrations, migration_files
from shared.db.pool import Connection
from shared.db.prepare import BUS_MIGRATIONS
from shared.events import encode_envelope, envelope_for
from shared.events.catalogue.accounts import AuditLogAppended
from shared.events.topics import ACCOUNTS_AUDIT
from shared.observability import Metrics, Problem, problem_type
from shared.service import Runtime
from tests.integration.accounts.locks import lock_waiters
from tests.integration.accounts.users import operator_claims

ROWS = 30
# Field boundaries and non-ASCII text in a purpose must not confuse the canonical form.
PURPOSES = ["ticket 4411", "a|b", "3:x|", "Überprüfung 請求", ""]


async def _audit(pool: asyncpg.Pool, n: int) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await store.audit(
            conn, uuid.uuid4(), uuid.uuid4(), "read", ["name", "email"], PURPOSES[n % 5],
            request_reference=None if n % 2 else f"REQ-{n}",
        )  # fmt: skip


async def _published(pool: asyncpg.Pool) -> dict[int, str]:
    rows = await pool.fetch("SELECT value FROM bus_outbox WHERE topic = $1", ACCOUNTS_AUDIT.name)
    data = [json.loads(r["value"])["data"] for r in rows]
    return {d["chain_seq"]: d["chain"] for d in data}


async def _as_owner_without_guards(pool: asyncpg.Pool, sql: str, *args: object) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("ALTER TABLE audit_log DISABLE TRIGGER audit_log_no_update_delete")
        await conn.execute(sql, *args)
        await conn.execute("ALTER TABLE audit_log ENABLE TRIGGER audit_log_no_update_delete")


async def test_concurrent_rows_form_one_chain_that_the_checks_recompute(
    pool: asyncpg.Pool,
) -> None:
    await asyncio.gather(*(_audit(pool, n) for n in range(ROWS)))

    async with pool.acquire() as conn:
        chain = await audit_chain.verify(conn)
        published = await _published(pool)
        against_kafka = await audit_chain.compare(conn, published)
    assert chain == audit_chain.ChainReport(ROWS, ROWS, chain.head)
    assert sorted(published) == list(range(1, ROWS + 1))  # one link per row, in its transaction
    assert published[ROWS] == chain.head
    assert against_kafka == audit_chain.CheckpointReport(ROWS, ROWS)


async def test_a_changed_row_breaks_the_chain_where_it_was_changed(pool: asyncpg.Pool) -> None:
    for n in range(10):
        await _audit(pool, n)
    await _as_owner_without_guards(
        pool, "UPDATE audit_log SET purpose = 'nothing to see' WHERE chain_seq = 5"
    )
    async with pool.acquire() as conn:
        report = await audit_chain.verify(conn)
    assert (report.intact, report.broken_at, report.rows) == (False, 5, 4)
    assert report.reason == "the row or its link changed"


async def test_a_removed_row_shows_as_missing(pool: asyncpg.Pool) -> None:
    for n in range(10):
        await _audit(pool, n)
    await _as_owner_without_guards(pool, "DELETE FROM audit_log WHERE chain_seq = 7")
    async with pool.acquire() as conn:
        report = await audit_chain.verify(conn)
    assert (report.broken_at, report.reason) == (7, "rows 7 to 7 of the chain are missing")


async def test_a_relinked_chain_passes_alone_but_not_against_the_published_links(
    pool: asyncpg.Pool,
) -> None:
    for n in range(10):
        await _audit(pool, n)
    # The owner removes row 7 and relinks everything after it: the chain alone holds.
    await _as_owner_without_guards(
        pool,
        """
        DO $$
        DECLARE r audit_log%ROWTYPE; previous bytea; seq bigint := 6;
        BEGIN
            DELETE FROM audit_log WHERE chain_seq = 7;
            SELECT chain INTO previous FROM audit_log WHERE chain_seq = 6;
            FOR r IN SELECT * FROM audit_log WHERE chain_seq > 7 ORDER BY chain_seq LOOP
                seq := seq + 1;
                r.chain_seq := seq;
                previous := sha256(previous || audit_log_canonical(r));
                UPDATE audit_log SET chain_seq = seq, chain = previous WHERE id = r.id;
            END LOOP;
        END $$;
        """,
    )
    async with pool.acquire() as conn:
        alone = await audit_chain.verify(conn)
        against_kafka = await audit_chain.compare(conn, await _published(pool))
    assert (alone.intact, alone.rows) == (True, 9)
    assert (against_kafka.agrees, against_kafka.mismatched_at) == (False, 7)
    assert against_kafka.reason == "the database's link differs"


async def test_a_rewritten_chain_published_after_the_true_one_is_caught(
    pool: asyncpg.Pool, settings: PlatformSettings
) -> None:
    """The table's owner can write the outbox too: after relinking the chain (above) it
    can publish the new links. Kafka still holds the first ones, which count."""
    for n in range(10):
        await _audit(pool, n)
    true_links = await _published(pool)
    await _as_owner_without_guards(
        pool, "UPDATE audit_log SET purpose = 'rewritten' WHERE chain_seq = 7"
    )
    await _as_owner_without_guards(
        pool,
        """
        DO $$
        DECLARE r audit_log%ROWTYPE; previous bytea;
        BEGIN
            SELECT chain INTO previous FROM audit_log WHERE chain_seq = 6;
            FOR r IN SELECT * FROM audit_log WHERE chain_seq >= 7 ORDER BY chain_seq LOOP
                previous := sha256(previous || audit_log_canonical(r));
                UPDATE audit_log SET chain = previous WHERE id = r.id;
            END LOOP;
        END $$;
        """,
    )
    rows = await pool.fetch("SELECT chain_seq, chain FROM audit_log ORDER BY chain_seq")
    forged = {r["chain_seq"]: bytes(r["chain"]).hex() for r in rows}
    # The true links first (the relay sent them), one of them twice (at least once),
    # then the forged ones of rows 7 to 10.
    links = [*sorted(true_links.items()), (3, true_links[3])]
    links += [(seq, forged[seq]) for seq in range(7, 11)]
    async with scratch_copies(settings, [ACCOUNTS_AUDIT.name]) as suffix:
        topic = ACCOUNTS_AUDIT.name + suffix
        producer = reliable_producer(settings)
        await producer.start()
        try:
            for seq, chain in links:
                event = AuditLogAppended(chain_seq=seq, chain=chain)
                envelope = envelope_for(event, source="accounts", subject=None)
                await producer.send_and_wait(topic, encode_envelope(envelope), key=b"audit")
        finally:
            await producer.stop()
        published = await audit_chain.published_links(AccountsSettings(), topic)
    assert published.first == true_links
    assert published.republished == [7, 8, 9, 10]
    async with pool.acquire() as conn:
        alone = await audit_chain.verify(conn)
        against_kafka = await audit_chain.compare(conn, published.first, published.republished)
    assert alone.intact
    assert (against_kafka.agrees, against_kafka.mismatched_at) == (False, 7)
    assert against_kafka.reason is not None
    assert "rewritten" in against_kafka.reason


async def test_the_sql_links_are_the_python_links(pool: asyncpg.Pool) -> None:
    for n in range(5):
        await _audit(pool, n)
    async with pool.acquire() as conn:
        rows = await conn.fetch(
            "SELECT a.*, audit_log_canonical(a) AS sql_bytes FROM audit_log a ORDER BY chain_seq"
        )
    for row in rows:
        assert audit_chain.canonical(row) == bytes(row["sql_bytes"])


async def test_rows_written_before_the_chain_existed_are_linked_by_its_migration(
    scratch_dsn: str,
) -> None:
    conn = await asyncpg.connect(scratch_dsn)
    try:
        bus = migration_files("bus", BUS_MIGRATIONS)
        own = migration_files(DATABASE, MIGRATIONS)
        before = [source for source in own if source[0] < f"{DATABASE}/005"]
        await apply_migrations(conn, bus + before)
        for n in range(4):
            await conn.execute(
                "INSERT INTO audit_log (operator_id, subject_id, action, fields, purpose)"
                " VALUES ($1, $2, 'read', '{name}', $3)",
                uuid.uuid4(),
                uuid.uuid4(),
                PURPOSES[n],
            )
        await apply_migrations(conn, bus + own)
        report = await audit_chain.verify(conn)
    finally:
        await conn.close()
    assert (report.intact, report.rows, report.head_seq) == (True, 4, 4)


async def test_rows_cut_from_the_end_are_missed_by_the_chain_but_not_by_kafka(
    pool: asyncpg.Pool,
) -> None:
    for n in range(10):
        await _audit(pool, n)
    await _as_owner_without_guards(pool, "DELETE FROM audit_log WHERE chain_seq > 8")
    async with pool.acquire() as conn:
        alone = await audit_chain.verify(conn)
        against_kafka = await audit_chain.compare(conn, await _published(pool))
    assert (alone.intact, alone.head_seq) == (True, 8)
    assert (against_kafka.mismatched_at, against_kafka.reason) == (
        9,
        "published, not in the database",
    )


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _watched(pool: asyncpg.Pool, clock: _Clock) -> tuple[AuditChainGauges, Runtime, Metrics]:
    metrics = Metrics("accounts-test", CollectorRegistry())
    gauges = AuditChainGauges(metrics.registry, full_check_seconds=3600, clock=clock)
    return gauges, Runtime(PlatformSettings(), "accounts", pool, metrics), metrics


async def _scrape(gauges: AuditChainGauges, runtime: Runtime) -> None:
    """A scrape's refresh, and the whole-chain check it started (which goes on past the
    scrape in the service) seen to its end."""
    await gauges.refresh(runtime)
    await gauges.settled()


async def test_metrics_check_new_rows_at_each_scrape_and_old_ones_on_schedule(
    pool: asyncpg.Pool,
) -> None:
    clock = _Clock()
    gauges, runtime, metrics = _watched(pool, clock)
    sample = metrics.registry.get_sample_value
    for n in range(5):
        await _audit(pool, n)
    await _scrape(gauges, runtime)
    assert (sample("audit_chain_intact"), sample("audit_chain_rows")) == (1, 5)

    for n in range(3):
        await _audit(pool, n)
    clock.now += 60
    await _scrape(gauges, runtime)
    assert (sample("audit_chain_intact"), sample("audit_chain_rows")) == (1, 8)
    assert sample("audit_chain_full_check_age_seconds") == 60

    # A row checked already, changed: the scrapes in between see only new rows...
    await _as_owner_without_guards(
        pool, "UPDATE audit_log SET purpose = 'nothing to see' WHERE chain_seq = 2"
    )
    clock.now += 60
    await _scrape(gauges, runtime)
    assert sample("audit_chain_intact") == 1
    # ... and the next full check finds it, and says so until the chain holds again.
    clock.now += 3600
    await _scrape(gauges, runtime)
    assert (sample("audit_chain_intact"), sample("audit_chain_rows")) == (0, 1)
    assert sample("audit_chain_full_check_age_seconds") == 0
    await _audit(pool, 9)
    clock.now += 60
    await _scrape(gauges, runtime)
    assert sample("audit_chain_intact") == 0


async def test_a_new_row_changed_shows_at_the_next_scrape(pool: asyncpg.Pool) -> None:
    clock = _Clock()
    gauges, runtime, metrics = _watched(pool, clock)
    for n in range(5):
        await _audit(pool, n)
    await _scrape(gauges, runtime)
    for n in range(2):
        await _audit(pool, n)
    await _as_owner_without_guards(pool, "DELETE FROM audit_log WHERE chain_seq = 6")
    clock.now += 15
    await _scrape(gauges, runtime)
    assert metrics.registry.get_sample_value("audit_chain_intact") == 0


async def test_an_incremental_check_first_confirms_the_head_it_continues_from(
    pool: asyncpg.Pool,
) -> None:
    for n in range(6):
        await _audit(pool, n)
    async with pool.acquire() as conn:
        checked = await audit_chain.verify(conn)
        assert (checked.intact, checked.head_seq) == (True, 6)

        # The last rows cut: what is left holds alone, and there is nothing after the head.
        await _as_owner_without_guards(pool, "DELETE FROM audit_log WHERE chain_seq > 4")
        cut = await audit_chain.verify(conn, checked)
        assert (cut.intact, cut.broken_at, cut.reason) == (
            False, 6, "row 6, checked before, is missing",
        )  # fmt: skip

        # New rows take the cut ones' places, linked from row 4: the whole chain holds
        # again, but the head checked earlier no longer has its link.
        for n in range(2):
            await _audit(pool, n)
        replaced = await audit_chain.verify(conn, checked)
        assert (replaced.broken_at, replaced.reason) == (
            6, "row 6 no longer has the link it had when checked",
        )  # fmt: skip
        assert (await audit_chain.verify(conn)).intact


async def test_rows_cut_from_the_end_and_written_again_show_at_the_next_scrape(
    pool: asyncpg.Pool,
) -> None:
    clock = _Clock()
    gauges, runtime, metrics = _watched(pool, clock)
    for n in range(5):
        await _audit(pool, n)
    await _scrape(gauges, runtime)
    assert metrics.registry.get_sample_value("audit_chain_intact") == 1
    await _as_owner_without_guards(pool, "DELETE FROM audit_log WHERE chain_seq = 5")
    await _audit(pool, 7)  # row 5 again, linked from row 4
    clock.now += 15
    await _scrape(gauges, runtime)
    assert metrics.registry.get_sample_value("audit_chain_intact") == 0


async def _audit_page(ctx: Context, **query: Any) -> tuple[list[int], dict[str, Any] | None]:
    """A page of GET /operator/audit: its rows' ids, and the query of the next page
    (from the Link header) while more rows follow."""
    response = Response()
    rows = await operators.read_audit(response, ctx, operator_claims(uuid.uuid4()), **query)
    link = response.headers.get("Link")
    if link is None:
        return [r.id for r in rows], None
    following = re.fullmatch(r'<\?(.+)>; rel="next"', link)
    assert following is not None, link
    ids = ("subject_id", "operator_id")
    return [r.id for r in rows], {
        k: uuid.UUID(v) if k in ids else int(v) for k, v in parse_qsl(following.group(1))
    }


@pytest.mark.promise("P-07")
async def test_a_row_still_waiting_for_the_chain_when_a_page_is_read_is_on_the_next_page(
    pool: asyncpg.Pool, ctx: Context
) -> None:
    """An id is drawn before its row waits for the chain's lock: a row with a lower id
    can commit after rows with higher ones. Paged by id, a page read meanwhile ended
    past it, and the next page never showed it; paged in chain order, it follows."""
    subject = uuid.uuid4()

    async def row(conn: Connection) -> None:
        await store.audit(conn, uuid.uuid4(), subject, "read", ["name"], "paging test")

    writer, late = await pool.acquire(), await pool.acquire()
    try:
        async with writer.transaction():
            await row(writer)  # holds the chain's lock until its commit
            late_rows = late.transaction()
            await late_rows.start()
            waiting = asyncio.create_task(row(late))  # its id drawn, waiting for the lock
            await lock_waiters(pool, 1)
            await row(writer)
            await row(writer)  # both with higher ids than the waiting row, linked before
        await waiting  # linked now, after them; not committed yet
        first, following = await _audit_page(ctx, subject_id=subject, limit=2)
        await late_rows.commit()
    finally:
        await pool.release(writer)
        await pool.release(late)
    seen = list(first)
    while following is not None:
        page, following = await _audit_page(ctx, **following)
        seen += page
    in_chain = await pool.fetch(
        "SELECT id FROM audit_log WHERE subject_id = $1 ORDER BY chain_seq", subject
    )
    assert len(in_chain) == 4
    assert seen == [r["id"] for r in in_chain]  # every row once, the late one last

    # A link naming after_id (as they did before after_seq) goes on from that row's place
    # in the chain; an id no row has, or both, are refused.
    after_first_page, _ = await _audit_page(ctx, subject_id=subject, after_id=first[-1])
    assert after_first_page == seen[2:]
    for query in ({"after_id": max(seen) + 1000}, {"after_id": first[-1], "after_seq": 1}):
        with pytest.raises(Problem) as refused:
            await _audit_page(ctx, subject_id=subject, **query)
        assert (refused.value.status, refused.value.type) == (422, problem_type("invalid-cursor"))
