"""The collector hashes each visitor with the salt of the day it came (P-04)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import date
from typing import Any, cast

import pytest

from services.analytics import handlers
from services.analytics.domain.beacon import Beacon
from services.analytics.domain.visitor import DailySalt, visitor_hash
from shared.events.catalogue.analytics import VisitRecorded
from shared.observability import Metrics

FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0"
SITE = "imt.example"
ADDRESS = "203.0.113.7"


class _Producer:
    """Takes every record at once; knows one partition (no cluster metadata)."""

    client = None

    def __init__(self) -> None:
        self.sent: list[bytes] = []

    async def partitions_for(self, topic: str) -> set[int]:
        return {0}

    async def send(self, topic: str, **record: Any) -> asyncio.Future[None]:
        self.sent.append(record["value"])
        acked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        acked.set_result(None)
        return acked


class _Clock:
    def __init__(self, day: date) -> None:
        self.day = day

    def today(self) -> date:
        return self.day


async def _visit(collector: handlers.Collector) -> VisitRecorded:
    beacon = Beacon(beacon_id=uuid.uuid4(), site=SITE, page="/")
    [visit] = await handlers.collect(collector, [beacon], ADDRESS, FIREFOX)
    return visit


@pytest.mark.promise("P-04")
async def test_an_address_is_hashed_anew_each_day_and_never_unsalted() -> None:
    clock, producer = _Clock(date(2026, 3, 1)), _Producer()
    salt = DailySalt(clock.today)
    collector = handlers.Collector(
        cast(Any, producer), cast(Any, None), salt, frozenset(), "analytics.visits",
        Metrics("analytics-test"),
    )  # fmt: skip
    first = await _visit(collector)
    again = await _visit(collector)
    assert first.visitor_hash == again.visitor_hash == visitor_hash(salt.current(), SITE, ADDRESS)
    clock.day = date(2026, 3, 2)
    next_day = await _visit(collector)
    assert next_day.visitor_hash != first.visitor_hash
    unsalted = visitor_hash(b"", SITE, ADDRESS)  # an empty key: plain BLAKE2b
    assert unsalted not in {first.visitor_hash, next_day.visitor_hash}
    # What reaches Kafka holds the hash, never the address or its network.
    assert len(producer.sent) == 3
    assert not [record for record in producer.sent if b"203.0.113" in record]
