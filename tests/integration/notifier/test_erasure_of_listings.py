"""An erased subject's id comes back nowhere, on PostgreSQL.

* A scheduled notice keeps its listed recipients' ids until its time comes. An erasure
  in between removes the subject's id from that list: when the notice fans out, it
  reaches the others and writes no inbox item or delivery for the erased subject.
* A notice listing a subject whose account erasure is done (a late event: a reply to a
  request, a campaign from a stale list) writes nothing for it either.
* Rows a fan-out or an email plan committed just after an erasure (they ran alongside
  it, and its deletes could not see them) are swept, for an hour after it.
* A reply to a request read after that request's erasure (the notices consumer behind
  the deletion one) writes nothing; one fanned out alongside the erasure is swept.
* The upgrade marks which recorded erasures took a whole account.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg

from services.notifier import handlers, store
from services.notifier.bootstrap import MIGRATIONS
from services.notifier.cards_caught_up import CardsCaughtUp
from services.notifier.config import NotifierSettings
from shared.bus.delivery import Delivery
from shared.db.migrations import apply_migrations
from shared.events import envelope_for
from shared.events.catalogue.accounts import RequestReplied
from shared.events.catalogue.deletion import EraseSubject
from shared.vault import Vault
from tests.support.migrations import split_at

# A notice that is not marketing: the cards are never asked about.
NO_CARDS = CardsCaughtUp(NotifierSettings(environment="test"))


async def test_an_erasure_removes_the_subject_from_notices_scheduled_for_later(
    pool: asyncpg.Pool,
) -> None:
    subject, other = uuid.uuid4(), uuid.uuid4()
    notice = store.Notice(
        notice_id=uuid.uuid4(),
        template="service_announcement",
        category="service_announcement",
        audience="listed",
        user_ids=(subject, other),
        params={"subject": "Shop closed on Friday", "message": "Closed for inventory."},
        channels=("inbox", "email"),
        recipient="user",
        pinned=False,
        source="test",
        send_at=datetime.now(UTC) + timedelta(hours=1),
    )
    async with pool.acquire() as conn, conn.transaction():
        await handlers.accept_notice(conn, notice)
        erased = await store.erase_subject_rows(conn, subject)
    assert erased["scheduled_notices"] == 1
    listed = await pool.fetchval(
        "SELECT listed FROM notices WHERE notice_id = $1", notice.notice_id
    )
    assert listed == [other]

    await pool.execute(
        "UPDATE notices SET send_at = now() - interval '1 second' WHERE notice_id = $1",
        notice.notice_id,
    )
    async with pool.acquire() as conn, conn.transaction():
        assert await handlers.fan_out_due(conn, NO_CARDS) == 1
        await store.plan_email_chunk(conn, 100)  # the emails are planned from the inbox items
    for table in ("inbox_items", "deliveries"):
        users = await pool.fetch(
            f"SELECT user_id FROM {table} WHERE notice_id = $1",
            notice.notice_id,
        )
        assert [r["user_id"] for r in users] == [other], table
    # A second erasure finds nothing more to remove.
    async with pool.acquire() as conn, conn.transaction():
        assert (await store.erase_subject_rows(conn, subject))["scheduled_notices"] == 0


def _notice(*users: uuid.UUID) -> store.Notice:
    return store.Notice(
        notice_id=uuid.uuid4(),
        template="service_announcement",
        category="service_announcement",
        audience="listed",
        user_ids=users,
        params={"subject": "Shop closed on Friday", "message": "Closed for inventory."},
        channels=("inbox", "email"),
        recipient="user",
        pinned=False,
        source="test",
    )


async def _erasure(
    conn: Any, subject: uuid.UUID, *, whole_account: bool = True, ago: timedelta = timedelta(0)
) -> None:
    await conn.execute(
        "INSERT INTO erasures (request_id, subject_id, state, erased, erased_at, whole_account)"
        " VALUES ($1, $2, 'done', '{}', now() - $3::interval, $4)",
        uuid.uuid4(),
        subject,
        ago,
        whole_account,
    )


async def test_a_notice_for_an_erased_account_writes_nothing_for_it(pool: asyncpg.Pool) -> None:
    erased, other = uuid.uuid4(), uuid.uuid4()
    notice = _notice(erased, other)
    async with pool.acquire() as conn, conn.transaction():
        await _erasure(conn, erased)
        assert await handlers.accept_notice(conn, notice) == 1
        await store.plan_email_chunk(conn, 100)
    for table in ("inbox_items", "deliveries"):
        users = await pool.fetch(
            f"SELECT user_id FROM {table} WHERE notice_id = $1",
            notice.notice_id,
        )
        assert [r["user_id"] for r in users] == [other], table


async def test_rows_written_alongside_an_erasure_are_swept(pool: asyncpg.Pool) -> None:
    raced, one_request, long_ago = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    notice = _notice(raced, one_request, long_ago)
    async with pool.acquire() as conn, conn.transaction():
        await handlers.accept_notice(conn, notice)  # before any erasure: rows for all
        await store.plan_email_chunk(conn, 100)
        await _erasure(conn, raced)
        await _erasure(conn, one_request, whole_account=False)  # one request's items only
        await _erasure(conn, long_ago, ago=timedelta(hours=2))  # past the sweep's window
        swept = await store.sweep_erased(conn)
    assert swept == {"inbox_items": 1, "deliveries": 1}
    for table in ("inbox_items", "deliveries"):
        users = await pool.fetch(
            f"SELECT user_id FROM {table} WHERE notice_id = $1",
            notice.notice_id,
        )
        assert {r["user_id"] for r in users} == {one_request, long_ago}, table


async def test_a_reply_read_after_its_requests_erasure_writes_nothing(
    pool: asyncpg.Pool,
) -> None:
    subject, request = uuid.uuid4(), uuid.uuid4()
    erase = EraseSubject(
        request_id=uuid.uuid4(), subject_id=subject, scope="request", item_id=request
    )
    late = RequestReplied(user_id=subject, request_id=request, reply_id=uuid.uuid4())
    kept = RequestReplied(user_id=subject, request_id=uuid.uuid4(), reply_id=uuid.uuid4())
    vault = await Vault.connect(NotifierSettings(environment="test"), pool)
    try:
        async with pool.acquire() as conn, conn.transaction():
            await handlers.start_erasure(conn, vault, erase)
            await handlers.on_notices(conn, [_delivered(late), _delivered(kept)])
    finally:
        await vault.close()
    notices = await pool.fetch("SELECT notice_id FROM notices")
    assert [r["notice_id"] for r in notices] == [kept.reply_id]
    # The erasure's record is not where the deletion's verifier finds the request again.
    records = await pool.fetch("SELECT e::text AS row, item_digest FROM erasures e")
    assert [r["item_digest"] is not None for r in records] == [True]
    assert all(str(request) not in r["row"] for r in records)
    assert all(request.bytes not in r["item_digest"] for r in records)


async def test_a_reply_fanned_out_alongside_its_requests_erasure_is_swept(
    pool: asyncpg.Pool,
) -> None:
    subject, request = uuid.uuid4(), uuid.uuid4()
    reply = handlers.notice_for(
        RequestReplied(user_id=subject, request_id=request, reply_id=uuid.uuid4()), "accounts"
    )
    assert reply is not None
    async with pool.acquire() as conn, conn.transaction():
        await handlers.accept_notice(conn, reply)
        await store.plan_email_chunk(conn, 100)
        # The erasure's deletes ran before the reply's rows were committed: it saw none.
        await conn.execute(
            "INSERT INTO erasures (request_id, subject_id, state, erased, erased_at,"
            " item_digest) VALUES ($1, $2, 'done', '{}', now(), sha256(convert_to($3::uuid::text,"
            " 'UTF8')))",
            uuid.uuid4(),
            subject,
            request,
        )
        swept = await store.sweep_erased(conn)
    assert swept == {"inbox_items": 1, "deliveries": 1, "notices": 1}
    assert await pool.fetchval("SELECT count(*) FROM notices") == 0


def _delivered(event: RequestReplied) -> Delivery:
    envelope = envelope_for(event, source="accounts", subject=str(event.user_id))
    return Delivery(envelope, event, None, "accounts.requests", 0, 0)


async def test_the_upgrade_marks_erasures_of_whole_accounts(scratch_dsn: str) -> None:
    before, after = split_at("notifier", MIGRATIONS, "011_account_erasures")
    conn = await asyncpg.connect(scratch_dsn)
    try:
        await apply_migrations(conn, before)
        kinds = {
            "account, confirming": ("confirming", None),
            "account, done": ("done", '{"contacts": 1, "inbox_items": 0}'),
            "request, done": ("done", '{"inbox_items": 2}'),
            "other scope, done": ("done", "{}"),
        }
        ids = {}
        for name, (state, erased) in kinds.items():
            ids[name] = uuid.uuid4()
            await conn.execute(
                "INSERT INTO erasures (request_id, subject_id, state, erased)"
                " VALUES ($1, $2, $3, $4::jsonb)",
                ids[name], uuid.uuid4(), state, erased,
            )  # fmt: skip
        await apply_migrations(conn, after)
        marked = {
            name: await conn.fetchval(
                "SELECT whole_account FROM erasures WHERE request_id = $1", request_id
            )
            for name, request_id in ids.items()
        }
    finally:
        await conn.close()
    assert {name for name, whole in marked.items() if whole} == {
        "account, confirming",
        "account, done",
    }


async def test_a_requests_items_are_erased_however_its_id_was_spelt(pool: asyncpg.Pool) -> None:
    """A reply names its request in its params, here in capitals: its rows are still
    the request's, and go with it."""
    subject, request = uuid.uuid4(), uuid.uuid4()
    reply = store.Notice(
        notice_id=uuid.uuid4(),
        template="request_reply",
        category="transactional",
        audience="listed",
        user_ids=(subject,),
        params={"request_id": str(request).upper()},
        channels=("inbox", "email"),
        recipient="user",
        pinned=False,
        source="test",
    )
    async with pool.acquire() as conn, conn.transaction():
        await handlers.accept_notice(conn, reply)
        await store.plan_email_chunk(conn, 100)
        erased = await store.erase_request_items(conn, subject, request)
    assert erased == {"inbox_items": 1, "deliveries": 1, "notices": 1}
