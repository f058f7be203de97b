"""An export to a recipient, a page at a time, on real PostgreSQL (P-18, P-19).

Every page is a transaction of its own, which writes its audit rows last: the audit
chain's lock (one writer at a time until its commit, migration 005) is then held for
the end of one page, never across pages nor while a page reads and decrypts. So an
audited read by another operator is answered while an export runs, between its pages
and while a page is stuck, and its audit row comes in between. Every consenting user is
disclosed once in the export, logged once and audited once, whatever the pages; no one
without consent ever is."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from fastapi import Response

from services.accounts import audit_chain
from services.accounts.context import DEVICE_MODEL, EMAIL, NAME, Context
from services.accounts.routes import operators
from shared.auth import Claims
from shared.config import PlatformSettings
from shared.db.pool import Connection
from shared.events.topics import ACCOUNTS_AUDIT
from shared.observability import Problem
from shared.vault import Vault
from tests.integration.accounts.locks import lock_waiters
from tests.integration.accounts.users import (
    accounts_context,
    operator_claims,
    stored_deletion_request,
    stored_user,
)

PURPOSE = "repairs"
FIELDS = ["user_id", "email", "name", "device_models", "device_damage_states"]


async def _user(conn: Connection, vault: Vault, n: int, **columns: Any) -> uuid.UUID:
    user_id = uuid.uuid4()
    return await stored_user(
        conn, id=user_id,
        email=await vault.seal(user_id, f"user{n}@example.org", purpose=EMAIL),
        name=await vault.seal(user_id, f"User {n}", purpose=NAME), **columns,
    )  # fmt: skip


async def _device(conn: Connection, vault: Vault, user_id: uuid.UUID, model: str) -> None:
    await conn.execute(
        "INSERT INTO devices (id, user_id, model, damage_state) VALUES ($1, $2, $3, 'screen')",
        uuid.uuid4(),
        user_id,
        await vault.seal(user_id, model, purpose=DEVICE_MODEL),
    )


async def _recipient(conn: Connection) -> uuid.UUID:
    recipient_id = uuid.uuid4()
    await conn.execute(
        "INSERT INTO recipients (id, name, kind, purpose, allowed_fields, created_by)"
        " VALUES ($1, $2, 'partner', $3, $4, $5)",
        recipient_id, f"partner {recipient_id}", PURPOSE, FIELDS, uuid.uuid4(),
    )  # fmt: skip
    return recipient_id


async def _consent(
    conn: Connection, user_id: uuid.UUID, recipient_id: uuid.UUID, granted: bool
) -> None:
    await conn.execute(
        "INSERT INTO consents (user_id, recipient_id, purpose, granted) VALUES ($1, $2, $3, $4)",
        user_id, recipient_id, PURPOSE, granted,
    )  # fmt: skip


async def _export(
    ctx: Context, op: Claims, recipient_id: uuid.UUID, after: str | None = None, limit: int = 500
) -> tuple[operators.Export, str | None]:
    """A page of the export, and its Link header."""
    response = Response()
    page = await operators.export_to_recipient(
        recipient_id, response, ctx, op, after=after, limit=limit
    )
    return page, response.headers.get("Link")


async def _read(ctx: Context, user_id: uuid.UUID) -> int:
    """An audited read by a support operator; the chain_seq of its audit row."""
    support = operator_claims(uuid.uuid4(), "support")
    await operators.read_user(user_id, "answering a ticket", ctx, support)
    seq = await ctx.pool.fetchval(
        "SELECT chain_seq FROM audit_log WHERE operator_id = $1 AND action = 'read'",
        uuid.UUID(support.sub),
    )
    assert isinstance(seq, int)
    return seq


async def _disclosed(pool: asyncpg.Pool, export_id: uuid.UUID) -> list[tuple[uuid.UUID, int]]:
    """Each user disclosed in the export, with the chain_seq of its audit row (one each)."""
    rows = await pool.fetch(
        "SELECT d.user_id, a.chain_seq FROM disclosures d"
        " JOIN audit_log a ON a.subject_id = d.user_id AND a.action = 'disclose'"
        " WHERE d.export_id = $1 ORDER BY a.chain_seq",
        export_id,
    )
    return [(r["user_id"], r["chain_seq"]) for r in rows]


@pytest.fixture
async def fresh_vault(settings: PlatformSettings, pool: asyncpg.Pool) -> AsyncIterator[Vault]:
    """A second vault on the same keys, its cache empty: the export's, so that it reads
    the keys from the vault's database (the sealing vault has them all cached)."""
    vault = await Vault.connect(settings, pool)
    yield vault
    await vault.close()


@pytest.mark.promise("P-18")
async def test_an_export_of_more_users_than_a_page_discloses_each_consenting_user_once(
    pool: asyncpg.Pool, vault: Vault, settings: PlatformSettings
) -> None:
    async with pool.acquire() as conn:
        recipient_id = await _recipient(conn)
        emails = {await _user(conn, vault, n): f"user{n}@example.org" for n in range(7)}
        consenting = sorted(emails)
        for user_id in consenting:
            await _consent(conn, user_id, recipient_id, True)
        await _device(conn, vault, consenting[0], "Phone A")
        never, withdrawn = await _user(conn, vault, 10), await _user(conn, vault, 11)
        child = await _user(conn, vault, 12, age_band="under_13", guardian_email=b"sealed")
        leaving = await _user(conn, vault, 13)
        await stored_deletion_request(conn, leaving, "requested", None)
        for user_id in (withdrawn, child, leaving):
            await _consent(conn, user_id, recipient_id, True)
        await _consent(conn, withdrawn, recipient_id, False)
    ctx = accounts_context(settings, pool, vault)
    officer = operator_claims(uuid.uuid4())
    # The last consenting user withdraws while the export runs, after its first page:
    # each page reads the consents of its own users, none is taken from the first.
    late = consenting[-1]

    first, link = await _export(ctx, officer, recipient_id, limit=3)
    assert first.next is not None
    assert link == f'<?after={first.next}&limit=3>; rel="next"'
    pages = [first]
    read_between = await _read(ctx, consenting[0])  # answered between pages, audited
    async with pool.acquire() as conn:
        await _consent(conn, late, recipient_id, False)
    while pages[-1].next is not None:
        page, link = await _export(ctx, officer, recipient_id, after=pages[-1].next, limit=3)
        assert (link is None) == (page.next is None)
        pages.append(page)

    assert [len(p.records) for p in pages] == [3, 3]  # the seventh withdrew meanwhile
    assert {p.export_id for p in pages} == {first.export_id}  # one export
    exported = [r["user_id"] for p in pages for r in p.records]
    assert exported == [str(u) for u in consenting[:-1]]  # each once, in id order
    assert set(first.records[0]) == set(FIELDS)
    assert (first.records[0]["device_models"], first.records[1]["device_models"]) == (
        ["Phone A"], [],
    )  # fmt: skip
    assert [r["email"] for p in pages for r in p.records] == [emails[u] for u in consenting[:-1]]
    # Logged once per user and export, audited once, nothing for anyone else.
    disclosed = await _disclosed(pool, first.export_id)
    assert sorted(u for u, _ in disclosed) == consenting[:-1]
    for user_id in (never, withdrawn, child, leaving, late):
        assert (
            await pool.fetchval("SELECT count(*) FROM disclosures WHERE user_id = $1", user_id) == 0
        )
        assert (
            await pool.fetchval(
                "SELECT count(*) FROM audit_log WHERE subject_id = $1 AND action = 'disclose'",
                user_id,
            )
            == 0
        )
    # The read between the pages is in the chain between them: no lock spanned them.
    seqs = [s for _, s in disclosed]
    assert max(seqs[:3]) < read_between < min(seqs[3:])

    # A page asked for again (its answer lost) comes whole, logging no one twice.
    again, _ = await _export(ctx, officer, recipient_id, after=first.next, limit=3)
    assert (again.export_id, again.records, again.next) == (
        first.export_id, pages[1].records, pages[1].next,
    )  # fmt: skip
    assert len(await _disclosed(pool, first.export_id)) == len(disclosed)
    # A cursor is its operator's, for its recipient.
    for other, recipient in ((operator_claims(uuid.uuid4()), recipient_id),
                             (officer, await _recipient_via(pool))):  # fmt: skip
        with pytest.raises(Problem) as refused:
            await _export(ctx, other, recipient, after=first.next, limit=3)
        assert (refused.value.status, refused.value.type.rsplit("/", 1)[-1]) == (
            422, "invalid-cursor",
        )  # fmt: skip
    # Rows written many to a statement are linked into the chain one by one, each link
    # published (in its row's transaction) as a single row's is.
    rows = await pool.fetch("SELECT value FROM bus_outbox WHERE topic = $1", ACCOUNTS_AUDIT.name)
    published = {d["chain_seq"]: d["chain"] for d in (json.loads(r["value"])["data"] for r in rows)}
    async with pool.acquire() as conn:
        chain = await audit_chain.verify(conn)
        assert chain.intact
        assert sorted(published) == list(range(1, chain.rows + 1))
        assert (await audit_chain.compare(conn, published)).agrees


async def _recipient_via(pool: asyncpg.Pool) -> uuid.UUID:
    async with pool.acquire() as conn:
        return await _recipient(conn)


async def _waiting_on(pool: asyncpg.Pool, table: str, timeout: float = 30.0) -> None:
    """Until a backend waits for a lock on ``table`` (fails after ``timeout``)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        if await pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE relation = $1::text::regclass"
            " AND NOT granted)",
            table,
        ):
            return
        await asyncio.sleep(0.02)
    pytest.fail(f"nothing came to wait for {table}")


AUDIT_LOCKS = (
    "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
    " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
)


@pytest.mark.promise("P-18")
@pytest.mark.parametrize(
    ("stuck_on", "lock"),
    [
        # Reading the page's keys from the vault (its first user's key already cached).
        ("subject_keys", "LOCK TABLE subject_keys IN ACCESS EXCLUSIVE MODE"),
        # Logging its disclosures, its users' rows held and their data read.
        ("disclosures", "LOCK TABLE disclosures IN SHARE MODE"),
    ],
)
async def test_an_audited_read_is_answered_while_a_page_of_an_export_is_stuck(
    pool: asyncpg.Pool,
    vault: Vault,
    fresh_vault: Vault,
    settings: PlatformSettings,
    stuck_on: str,
    lock: str,
) -> None:
    async with pool.acquire() as conn:
        recipient_id = await _recipient(conn)
        users = sorted([await _user(conn, vault, n) for n in range(4)])
        for user_id in users:
            await _consent(conn, user_id, recipient_id, True)
    exporting_ctx = accounts_context(settings, pool, fresh_vault)
    reading_ctx = accounts_context(settings, pool, vault)  # every key cached: reads no key
    await vault.prefetch(users)
    await fresh_vault.prefetch(users[:1])
    officer = operator_claims(uuid.uuid4())

    blocker = await pool.acquire()
    blocking = blocker.transaction()
    await blocking.start()
    export: asyncio.Task[Any] | None = None
    try:
        await blocker.execute(lock)
        export = asyncio.create_task(_export(exporting_ctx, officer, recipient_id))
        await _waiting_on(pool, stuck_on)
        # The page is under way and stuck: the audit chain's lock is nobody's...
        assert await pool.fetchval(AUDIT_LOCKS) == 0
        # ...so another operator's audited read is answered now, not after the export.
        read = await asyncio.wait_for(_read(reading_ctx, users[-1]), 10)
    finally:
        await blocking.rollback()
        await pool.release(blocker)
        if export is not None:
            page, _ = await export
    assert [r["user_id"] for r in page.records] == [str(u) for u in users]
    disclosed = await _disclosed(pool, page.export_id)
    assert sorted(u for u, _ in disclosed) == users
    assert read < min(s for _, s in disclosed)  # audited before the page it waited for none of


async def _logged(pool: asyncpg.Pool, user_id: uuid.UUID) -> tuple[int, int]:
    """The user's disclosure rows and disclose audit rows."""
    disclosures = await pool.fetchval(
        "SELECT count(*) FROM disclosures WHERE user_id = $1", user_id
    )
    audited = await pool.fetchval(
        "SELECT count(*) FROM audit_log WHERE subject_id = $1 AND action = 'disclose'", user_id
    )
    return disclosures, audited


@pytest.mark.promise("P-07")
@pytest.mark.promise("P-18")
async def test_a_page_disclosed_longer_ago_than_a_retry_is_refused_not_answered_unlogged(
    pool: asyncpg.Pool, vault: Vault, settings: PlatformSettings
) -> None:
    async with pool.acquire() as conn:
        recipient_id = await _recipient(conn)
        users = sorted([await _user(conn, vault, n) for n in range(3)])
        first_user, second_user, third_user = users
        for user_id in users:
            await _consent(conn, user_id, recipient_id, True)
    ctx = accounts_context(settings, pool, vault)
    officer = operator_claims(uuid.uuid4())
    first, _ = await _export(ctx, officer, recipient_id, limit=1)
    second, _ = await _export(ctx, officer, recipient_id, after=first.next, limit=1)
    assert second.next is not None
    # Long after, the second user changed their name; the export's cursors are kept.
    await pool.execute(
        "UPDATE disclosures SET at = at - $2::interval WHERE export_id = $1",
        first.export_id,
        operators.EXPORT_RETRY * 2,
    )
    async with pool.acquire() as conn:
        renamed = await vault.seal(second_user, "Renamed Later", purpose=NAME)
        await conn.execute("UPDATE users SET name = $2 WHERE id = $1", second_user, renamed)

    # Neither the cursor the officer kept nor one made by hand for the first page
    # answers those users' data again without a disclosure of its own.
    made = operators.export_cursor(first.export_id, uuid.UUID(int=0))
    for cursor in (first.next, made):
        with pytest.raises(Problem) as refused:
            await _export(ctx, officer, recipient_id, after=cursor, limit=1)
        assert (refused.value.status, refused.value.type.rsplit("/", 1)[-1]) == (
            410, "export-page-expired",
        )  # fmt: skip
    assert await _logged(pool, second_user) == (1, 1)
    assert await _logged(pool, first_user) == (1, 1)
    # The page after, never answered, is a first disclosure however old its cursor:
    # answered, logged and audited like any.
    third, _ = await _export(ctx, officer, recipient_id, after=second.next, limit=1)
    assert [r["user_id"] for r in third.records] == [str(third_user)]
    assert await _logged(pool, third_user) == (1, 1)
    # A new export answers the renamed user again, as a disclosure of its own.
    again, _ = await _export(ctx, officer, recipient_id, limit=3)
    assert [r["name"] for r in again.records if r["user_id"] == str(second_user)] == [
        "Renamed Later"
    ]
    assert await _logged(pool, second_user) == (2, 2)


async def _logged_to(
    pool: asyncpg.Pool, page: operators.Export, op: Claims, recipient_name: str
) -> list[tuple[bool, bool]]:
    """For each record of ``page``: whether its disclosure is logged to the page's
    recipient by ``op`` in its export, and whether ``op`` audited it to that recipient."""
    found = []
    for record in page.records:
        user_id = uuid.UUID(record["user_id"])
        logged = await pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM disclosures WHERE export_id = $1 AND user_id = $2"
            " AND recipient_id = $3 AND operator_id = $4)",
            page.export_id, user_id, page.recipient_id, uuid.UUID(op.sub),
        )  # fmt: skip
        audited = await pool.fetchval(
            "SELECT EXISTS (SELECT 1 FROM audit_log WHERE subject_id = $1 AND operator_id = $2"
            " AND action = 'disclose' AND purpose = $3)",
            user_id, uuid.UUID(op.sub), f"export to {recipient_name} for {PURPOSE}",
        )  # fmt: skip
        found.append((logged, audited))
    return found


@pytest.mark.promise("P-07")
@pytest.mark.promise("P-18")
@pytest.mark.parametrize("other", ["recipient", "operator"])
async def test_two_first_pages_at_once_under_a_made_up_cursor_disclose_nothing_unlogged(
    pool: asyncpg.Pool, vault: Vault, settings: PlatformSettings, other: str
) -> None:
    """A cursor is plain base64, so one can name an export id never used. Two pages
    under it at once, to two recipients (or by two operators), are one export: the
    first owns it, the second is refused. Both answered, the log (one row per export and
    user) would hold one of them only, the other's disclosures unlogged and unaudited."""
    async with pool.acquire() as conn:
        first_recipient = await _recipient(conn)
        second_recipient = await _recipient(conn) if other == "recipient" else first_recipient
        users = sorted([await _user(conn, vault, n) for n in range(3)])
        for user_id in users:
            for recipient_id in {first_recipient, second_recipient}:
                await _consent(conn, user_id, recipient_id, True)
    ctx = accounts_context(settings, pool, vault)
    officer = operator_claims(uuid.uuid4())
    second_officer = officer if other == "recipient" else operator_claims(uuid.uuid4())
    callers = [(officer, first_recipient), (second_officer, second_recipient)]
    made_up = operators.export_cursor(uuid.uuid4(), uuid.UUID(int=0))

    # Both pages under way at once: held where they log their disclosures (or wherever
    # one waits for the other), then let go together.
    blocker = await pool.acquire()
    blocking = blocker.transaction()
    await blocking.start()
    pages: list[asyncio.Task[Any]] = []
    try:
        await blocker.execute("LOCK TABLE disclosures IN SHARE MODE")
        for op, recipient_id in callers:
            pages.append(asyncio.create_task(_export(ctx, op, recipient_id, after=made_up)))
            await lock_waiters(pool, len(pages))
    finally:
        await blocking.rollback()
        await pool.release(blocker)
    answers = await asyncio.gather(*pages, return_exceptions=True)

    answered = 0
    for (op, recipient_id), answer in zip(callers, answers, strict=True):
        if isinstance(answer, Problem):
            assert (answer.status, answer.type.rsplit("/", 1)[-1]) == (422, "invalid-cursor")
            continue
        assert not isinstance(answer, BaseException), answer
        page, _ = answer
        assert [r["user_id"] for r in page.records] == [str(u) for u in users]
        name = f"partner {recipient_id}"
        assert await _logged_to(pool, page, op, name) == [(True, True)] * len(users)
        answered += 1
    assert answered == 1  # the export is the first page's; the other is refused
