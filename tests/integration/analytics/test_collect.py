"""Publishing a batch of views on real Kafka when one of them cannot be queued."""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from aiokafka.errors import MessageSizeTooLargeError

from services.analytics import handlers
from services.analytics.domain.beacon import parse_beacons
from services.analytics.domain.visitor import DailySalt
from shared.bus.kafka_options import reliable_producer
from shared.config import PlatformSettings
from shared.db import create_pool
from shared.events import decode_envelope
from shared.observability import Metrics
from tests.support.probes import read_all


def batch(pages: list[str]) -> bytes:
    return json.dumps(
        [{"beacon_id": str(uuid.uuid4()), "site": "imt.example", "page": p} for p in pages]
    ).encode()


@pytest.fixture
async def pool(scratch_dsn: str) -> AsyncIterator[asyncpg.Pool]:
    pool = await create_pool(scratch_dsn, max_size=2)
    yield pool
    await pool.close()


async def test_a_view_that_cannot_be_queued_fails_the_batch_after_the_others_are_acked(
    settings: PlatformSettings, scratch_topic: str, pool: asyncpg.Pool
) -> None:
    # The third view's record is over the producer's size limit: send() refuses it
    # after the first two were queued.
    beacons = parse_beacons(batch(["/a", "/b", "/" + "x" * 500, "/d"]), 25)
    producer = reliable_producer(settings, max_request_size=900)
    await producer.start()
    collector = handlers.Collector(
        producer, pool, DailySalt(), frozenset(), scratch_topic, Metrics("analytics-test")
    )
    try:
        with pytest.raises(MessageSizeTooLargeError):
            await handlers.collect(collector, beacons, "203.0.113.7", "Mozilla/5.0")
    finally:
        await producer.stop()
    records = await read_all(settings, scratch_topic, expected=2)
    # The two queued before the refused one were awaited and acknowledged; the fourth
    # was never queued. The client's retry of the batch counts each view once (by id).
    ids = {decode_envelope(r.value).data["beacon_id"] for r in records}  # type: ignore[attr-defined]
    assert ids == {str(b.beacon_id) for b in beacons[:2]}
