"""P-32: a campaign waits for the opt-outs already on the bus, however far the notifier's
contacts consumer is behind (the settle only covers the usual gap)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.errors import KafkaConnectionError
from aiokafka.structs import OffsetAndMetadata

from services.notifier import handlers, store
from services.notifier.cards_caught_up import CardsCaughtUp
from shared.bus.kafka_options import client_options, reliable_producer
from shared.bus.scratch import scratch_topic
from shared.config import PlatformSettings


@pytest.fixture
async def cards_topic(settings: PlatformSettings) -> AsyncIterator[str]:
    async with scratch_topic(settings, 1) as name:
        yield name


async def _publish(settings: PlatformSettings, topic: str, count: int) -> None:
    producer = reliable_producer(settings)
    await producer.start()
    try:
        for n in range(count):
            await producer.send_and_wait(topic, f"card {n}".encode(), key=b"user")
    finally:
        await producer.stop()


async def _applied_up_to(settings: PlatformSettings, group: str, topic: str, offset: int) -> None:
    """What the contacts consumer commits once a card's effect is in its database."""
    consumer = AIOKafkaConsumer(
        **client_options(settings), group_id=group, enable_auto_commit=False
    )
    partition = TopicPartition(topic, 0)
    consumer.assign([partition])
    await consumer.start()
    try:
        await consumer.commit({partition: OffsetAndMetadata(offset, "")})
    finally:
        await consumer.stop()


async def test_the_cards_on_the_bus_when_a_notice_came_due_must_all_be_applied(
    settings: PlatformSettings, cards_topic: str
) -> None:
    group = f"cards-{uuid.uuid4().hex[:8]}"
    cards = CardsCaughtUp(settings, cards_topic, group)
    notice = uuid.uuid4()
    try:
        await _publish(settings, cards_topic, 3)
        assert not await cards.ready(notice)  # the group has applied none of them
        await _applied_up_to(settings, group, cards_topic, 2)
        assert not await cards.ready(notice)  # the third may be the opt-out
        # A card published after the notice came due is not waited for.
        await _publish(settings, cards_topic, 1)
        await _applied_up_to(settings, group, cards_topic, 3)
        assert await cards.ready(notice)
        # Another notice, due now, waits for the fourth.
        assert not await cards.ready(uuid.uuid4())
    finally:
        await cards.close()


def _campaign(user: uuid.UUID) -> store.Notice:
    return store.Notice(
        notice_id=uuid.uuid4(),
        template="marketing_newsletter",
        category="marketing",
        audience="listed",
        user_ids=(user,),
        params={"subject": "Screen week", "message": "Screens repaired while you wait."},
        channels=("inbox", "email"),
        recipient="user",
        pinned=False,
        source="test",
        send_at=datetime.now(UTC) - timedelta(seconds=1),
    )


async def _status(pool: asyncpg.Pool, notice: store.Notice) -> asyncpg.Record:
    row = await pool.fetchrow(
        "SELECT status, send_at > now() AS put_off FROM notices WHERE notice_id = $1",
        notice.notice_id,
    )
    assert row is not None
    return row


@pytest.mark.promise("P-32")
async def test_a_campaign_is_put_off_while_a_card_before_it_is_unapplied(
    settings: PlatformSettings, cards_topic: str, pool: asyncpg.Pool
) -> None:
    group = f"cards-{uuid.uuid4().hex[:8]}"
    cards = CardsCaughtUp(settings, cards_topic, group)
    campaign = _campaign(uuid.uuid4())
    try:
        await _publish(settings, cards_topic, 1)  # the opt-out, not yet applied
        async with pool.acquire() as conn, conn.transaction():
            await store.insert_notice(conn, campaign, scheduled=True)
        async with pool.acquire() as conn, conn.transaction():
            assert await handlers.fan_out_due(conn, cards) == 1
        row = await _status(pool, campaign)
        assert (row["status"], row["put_off"]) == ("scheduled", True)

        await _applied_up_to(settings, group, cards_topic, 1)
        await pool.execute(
            "UPDATE notices SET send_at = now() - interval '1 second' WHERE notice_id = $1",
            campaign.notice_id,
        )
        async with pool.acquire() as conn, conn.transaction():
            assert await handlers.fan_out_due(conn, cards) == 1
        assert (await _status(pool, campaign))["status"] == "fanned_out"
    finally:
        await cards.close()


class _KafkaAway:
    """Cards whose state Kafka cannot tell (its group coordinator moving, say)."""

    async def ready(self, notice_id: uuid.UUID) -> bool:
        raise KafkaConnectionError()


async def test_a_campaign_kafka_cannot_vouch_for_is_put_off_and_holds_up_no_other_notice(
    pool: asyncpg.Pool,
) -> None:
    now = datetime.now(UTC)
    campaign = replace(_campaign(uuid.uuid4()), audience="all", user_ids=(), send_at=now)
    announcement = replace(
        campaign,
        notice_id=uuid.uuid4(),
        template="service_announcement",
        category="service_announcement",
        send_at=now + timedelta(milliseconds=1),  # due after the campaign: claimed second
    )
    async with pool.acquire() as conn, conn.transaction():
        for notice in (campaign, announcement):
            await store.insert_notice(conn, notice, scheduled=True)
    await pool.execute("UPDATE notices SET send_at = send_at - interval '1 minute'")

    async with pool.acquire() as conn, conn.transaction():
        assert await handlers.fan_out_due(conn, _KafkaAway()) == 1
    row = await _status(pool, campaign)
    assert (row["status"], row["put_off"]) == ("scheduled", True)
    async with pool.acquire() as conn, conn.transaction():
        assert await handlers.fan_out_due(conn, _KafkaAway()) == 1
    assert (await _status(pool, announcement))["status"] == "fanned_out"
    assert (await _status(pool, campaign))["status"] == "scheduled"
