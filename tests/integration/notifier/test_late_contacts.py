"""A notice for all users reaches the accounts that existed when it went out, even when
their card comes later: still on its way, or activated since. An account opened after it
is not told. The real handlers on PostgreSQL."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.notifier import handlers, late_contacts, store, stream
from services.notifier.domain.templates import Renderer
from services.notifier.stream import InboxHub
from shared.bus.delivery import Delivery, read_record
from shared.events.catalogue.notifier import NoticeDelivered
from shared.vault import Vault
from tests.integration.notifier.support import address, listener_deaf, sealed_contact
from tests.support.sse import next_event, session_open


def _breach() -> store.Notice:
    return store.Notice(
        notice_id=uuid.uuid4(), template="incident", category="account_security",
        audience="all", params={"title": "Stolen laptop", "message": "Reset it."},
        channels=("email", "inbox"), recipient="user", pinned=True, source="test",
    )  # fmt: skip


def _policy(version: str) -> store.Notice:
    return store.Notice(
        notice_id=uuid.uuid4(), template="policy_change", category="policy_change",
        audience="all", channels=("email", "inbox"), recipient="user", pinned=True,
        params={"policy_version": version, "summary": "s", "effective_at": "2030-01-01"},
        source="test",
    )  # fmt: skip


async def _card(
    pool: asyncpg.Pool, vault: Vault, uid: uuid.UUID, written: datetime, *, active: bool = True
) -> None:
    """A card as the contacts consumer applies it, written by accounts at ``written``."""
    contact = dataclasses.replace(
        await sealed_contact(vault, uid, address(uid), written), active=active
    )
    async with pool.acquire() as conn, conn.transaction():
        await store.upsert_contact(conn, contact)
        await late_contacts.deliver_missed(conn, uid)


async def _told(pool: asyncpg.Pool, uid: uuid.UUID, notice: store.Notice) -> tuple[int, int]:
    row = await pool.fetchrow(
        "SELECT (SELECT count(*) FROM inbox_items WHERE user_id = $1 AND notice_id = $2) AS inbox,"
        " (SELECT count(*) FROM deliveries WHERE user_id = $1 AND notice_id = $2) AS email",
        uid,
        notice.notice_id,
    )
    assert row is not None
    return row["inbox"], row["email"]


async def _fan_out(pool: asyncpg.Pool, notice: store.Notice) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await handlers.accept_notice(conn, notice)


async def test_a_breach_notice_reaches_cards_that_came_after_it_for_accounts_that_existed(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    before = datetime.now(UTC) - timedelta(minutes=5)
    held, unconfirmed, in_transit, newcomer = (uuid.uuid4() for _ in range(4))
    await _card(pool, vault, held, before)
    await _card(pool, vault, unconfirmed, before, active=False)

    breach = _breach()
    await _fan_out(pool, breach)
    assert await _told(pool, held, breach) == (1, 0)  # its email is planned from the item
    assert await _told(pool, unconfirmed, breach) == (0, 0)  # no notice to an unconfirmed one
    await _queue_fan_out_outcomes(pool)

    await _card(pool, vault, in_transit, before)  # written before the fan-out, read after
    await _card(pool, vault, unconfirmed, datetime.now(UTC))  # confirmed since
    await _card(pool, vault, newcomer, datetime.now(UTC))  # opened after the breach
    assert await _told(pool, in_transit, breach) == (1, 1)
    assert await _told(pool, unconfirmed, breach) == (1, 1)
    assert await _told(pool, newcomer, breach) == (0, 0)

    [outcome] = await pool.fetch(
        "SELECT topic, key, value FROM bus_outbox WHERE key = $1"
        " AND convert_from(value, 'UTF8')::jsonb #>> '{data,notice_id}' = $2",
        str(in_transit).encode(),
        str(breach.notice_id),
    )
    delivered = read_record(outcome["value"], outcome["key"], outcome["topic"], 0, 0)
    assert isinstance(delivered, Delivery), delivered
    assert isinstance(delivered.event, NoticeDelivered)
    assert (delivered.event.notice_id, delivered.event.channel) == (breach.notice_id, "inbox")

    await _card(pool, vault, in_transit, datetime.now(UTC))  # a later card: once is enough
    assert await _told(pool, in_transit, breach) == (1, 1)
    recipients = await pool.fetchval(
        "SELECT recipients FROM notices WHERE notice_id = $1", breach.notice_id
    )
    assert recipients == 3  # held, then in transit and unconfirmed


async def _queue_fan_out_outcomes(pool: asyncpg.Pool) -> None:
    """What the worker's outcome loop does after a fan-out: its items' outcomes, queued."""
    async with pool.acquire() as conn:
        while await store.queue_inbox_outcomes(conn) is not None:
            pass


async def _outcomes(pool: asyncpg.Pool, uid: uuid.UUID, notice: store.Notice) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM bus_outbox WHERE key = $1"
            " AND convert_from(value, 'UTF8')::jsonb #>> '{data,notice_id}' = $2",
            str(uid).encode(),
            str(notice.notice_id),
        )
    )


async def test_a_card_read_before_the_fan_outs_outcomes_went_gets_one_outcome(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    held, uid = uuid.uuid4(), uuid.uuid4()
    await _card(pool, vault, held, datetime.now(UTC) - timedelta(minutes=2))
    breach = _breach()
    await _fan_out(pool, breach)  # an item for the card held: its outcome is to be queued
    await _card(pool, vault, uid, datetime.now(UTC) - timedelta(minutes=1))
    assert await _told(pool, uid, breach) == (1, 1)
    assert await _outcomes(pool, uid, breach) == 0  # the fan-out's outcomes, still to go, hold it
    await _queue_fan_out_outcomes(pool)
    assert await _outcomes(pool, uid, breach) == 1


async def test_a_card_read_after_the_accounts_erasure_is_told_nothing(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    uid = uuid.uuid4()
    breach = _breach()
    await _fan_out(pool, breach)
    await pool.execute(
        "INSERT INTO erasures (request_id, subject_id, state, whole_account)"
        " VALUES ($1, $2, 'done', true)",
        uuid.uuid4(),
        uid,
    )
    await _card(pool, vault, uid, datetime.now(UTC) - timedelta(minutes=1))  # a lagging read
    assert await _told(pool, uid, breach) == (0, 0)


async def test_a_late_card_is_recorded_as_told_of_the_policy_version(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    uid = uuid.uuid4()
    written = datetime.now(UTC) - timedelta(minutes=1)
    policy = _policy(f"v-{uuid.uuid4().hex[:8]}")
    await _fan_out(pool, policy)
    await _card(pool, vault, uid, written)
    version = await pool.fetchval(
        "SELECT policy_version FROM policy_notices WHERE user_id = $1", uid
    )
    assert version == policy.params["policy_version"]


async def test_a_card_stored_while_a_fan_out_runs_is_never_missed_by_both(
    pool: asyncpg.Pool, vault: Vault
) -> None:
    """The fan-out holds the contacts table: the card waits for its commit and then
    finds the notice, or goes first and is fanned out to."""
    uid = uuid.uuid4()
    breach = _breach()
    async with pool.acquire() as fanning, fanning.transaction():
        await handlers.accept_notice(fanning, breach)
        card = asyncio.create_task(_card(pool, vault, uid, datetime.now(UTC) - timedelta(1)))
        await asyncio.sleep(0.3)
        assert not card.done()  # it waits for the fan-out's commit
    await card
    assert await _told(pool, uid, breach) == (1, 1)


def _announcement(uid: uuid.UUID, subject: str) -> store.Notice:
    return store.Notice(
        notice_id=uuid.uuid4(), template="service_announcement",
        category="service_announcement", audience="listed", user_ids=(uid,),
        params={"subject": subject, "message": "-"}, channels=("inbox",), recipient="user",
        pinned=False, source="test",
    )  # fmt: skip


async def test_a_late_cards_item_reaches_its_open_stream_and_no_other(
    pool: asyncpg.Pool, vault: Vault, scratch_dsn: str
) -> None:
    held, late = uuid.uuid4(), uuid.uuid4()
    before = datetime.now(UTC) - timedelta(minutes=5)
    await _card(pool, vault, held, before)
    breach = _breach()
    await _fan_out(pool, breach)
    hub = InboxHub(pool, scratch_dsn, Renderer())
    await hub.start()
    # Both connect after the fan-out. The holder's item is not among those sent first
    # (acknowledged, say): only a notification naming the late user keeps it from
    # being pushed to the holder again.
    streams = {
        uid: hub.stream(uid, await hub.subscribe(uid), [], session_open) for uid in (held, late)
    }
    try:
        for events in streams.values():
            assert (await next_event(events))["event"] == "ready"
        await _card(pool, vault, late, before)  # written before the fan-out, read after
        item = await next_event(streams[late])
        assert (item["event"], item["notice_id"]) == ("notice", str(breach.notice_id))

        await _fan_out(pool, _announcement(held, "after"))
        assert (await next_event(streams[held]))["title"] == "after"  # not the breach again
    finally:
        for events in streams.values():
            await events.aclose()
        await hub.close()


async def _fanned_out_an_hour_ago(pool: asyncpg.Pool) -> store.Notice:
    breach = _breach()
    await _fan_out(pool, breach)
    await pool.execute(
        "UPDATE notices SET fanned_out_at = now() - interval '1 hour' WHERE notice_id = $1",
        breach.notice_id,
    )
    return breach


async def test_a_late_cards_item_written_while_the_listener_was_lost_is_pushed_after(
    pool: asyncpg.Pool, vault: Vault, scratch_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The item is new though its notice went out an hour ago: the catch-up after the
    listener's loss finds it by when it was written, not by its notice's fan-out."""
    late = uuid.uuid4()
    breach = await _fanned_out_an_hour_ago(pool)
    hub = InboxHub(pool, scratch_dsn, Renderer())
    await hub.start()
    events = hub.stream(late, await hub.subscribe(late), [], session_open)
    try:
        assert (await next_event(events))["event"] == "ready"
        async with listener_deaf(pool, monkeypatch):
            # Written before the breach went out, read now: its NOTIFY is not heard.
            await _card(pool, vault, late, datetime.now(UTC) - timedelta(hours=2))
            assert await _told(pool, late, breach) == (1, 1)
        item = await next_event(events)  # caught up
        assert (item["event"], item["notice_id"]) == ("notice", str(breach.notice_id))
        assert item["pinned"]
    finally:
        await events.aclose()
        await hub.close()


async def test_a_late_item_is_caught_up_by_the_transaction_that_wrote_it(
    pool: asyncpg.Pool, vault: Vault, scratch_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A batch of cards can be held in its transaction (by a fan-out's lock, say) from
    before the listener's loss, while fences move the horizon up, and write its late
    item while the listener is deaf: that item is still caught up."""
    monkeypatch.setattr(stream, "FENCE_SECONDS", 0.1)
    late = uuid.uuid4()
    breach = await _fanned_out_an_hour_ago(pool)
    card = await sealed_contact(vault, late, address(late), datetime.now(UTC) - timedelta(1))
    hub = InboxHub(pool, scratch_dsn, Renderer())
    await hub.start()
    events = hub.stream(late, await hub.subscribe(late), [], session_open)
    try:
        assert (await next_event(events))["event"] == "ready"
        async with pool.acquire() as conn:
            batch = conn.transaction()
            await batch.start()
            await conn.execute("SELECT 1")
            await asyncio.sleep(1)  # held, across fences
            async with listener_deaf(pool, monkeypatch):
                await store.upsert_contact(conn, card)
                assert await late_contacts.deliver_missed(conn, late) == 1
                await batch.commit()
        item = await next_event(events)  # caught up
        assert (item["event"], item["notice_id"]) == ("notice", str(breach.notice_id))
    finally:
        await events.aclose()
        await hub.close()
