"""A collector restart draws a new salt: the same networks seen before and after it have
a second hash each. On real Kafka and PostgreSQL, through the collector, the aggregator
and a release: the day's cell counts twelve hashes of six networks, and a release counts
six, not twelve, so no restart lifts it over k (P-20)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from services.analytics import handlers
from services.analytics.domain.beacon import parse_beacons
from services.analytics.domain.release import keyed_noise
from services.analytics.domain.visitor import DailySalt
from shared.bus.kafka_options import reliable_producer
from shared.config import PlatformSettings
from shared.events import decode_envelope
from shared.events.catalogue.analytics import VisitRecorded, WindowGrain
from shared.observability import Metrics
from tests.support.probes import read_all

SITE = "imt.example"
NETWORKS = [f"198.51.{n}.7" for n in range(6)]  # six /24 networks


async def _visit_from_every_network(
    settings: PlatformSettings, pool: asyncpg.Pool, topic: str, salt: DailySalt
) -> None:
    """One collector process (its salt): each network reads /x once."""
    producer = reliable_producer(settings)
    await producer.start()
    collector = handlers.Collector(
        producer, pool, salt, frozenset(), topic, Metrics("analytics-test")
    )
    try:
        for address in NETWORKS:
            beacon = [{"beacon_id": str(uuid.uuid4()), "site": SITE, "page": "/x"}]
            beacons = parse_beacons(json.dumps(beacon).encode(), 25)
            await handlers.collect(collector, beacons, address, "Mozilla/5.0")
    finally:
        await producer.stop()


def _request(k: int, grain: WindowGrain) -> handlers.ReleaseRequest:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    end = today + timedelta(days=1)
    audience = "operator" if k <= 1 else "public"
    final = None if k <= 1 else end  # today counts as final here
    return handlers.ReleaseRequest(audience, SITE, grain, today, end, k, None, final)


@pytest.mark.promise("P-20")
async def test_networks_seen_before_and_after_a_restart_are_not_counted_twice_in_a_release(
    settings: PlatformSettings, scratch_topic: str, pool: asyncpg.Pool
) -> None:
    await _visit_from_every_network(settings, pool, scratch_topic, DailySalt())
    await _visit_from_every_network(settings, pool, scratch_topic, DailySalt())  # restarted
    records = await read_all(settings, scratch_topic, expected=2 * len(NETWORKS))
    visits = [VisitRecorded.model_validate(decode_envelope(r.value).data) for r in records]  # type: ignore[attr-defined]
    assert len({v.salt_id for v in visits}) == 2
    async with pool.acquire() as conn, conn.transaction():
        counted = await handlers.aggregate(
            conn, visits, datetime.now(UTC) - timedelta(hours=1), cap=200
        )
    assert counted == 12
    noise = keyed_noise(b"k" * 32)
    stored, _, _ = await handlers.release_trends(pool, _request(1, "day"), noise, 100)
    # Operators see what is stored: twelve hashes (a hash per network and salt).
    [day] = stored
    assert (day.total.visits, day.total.unique_visitors, day.salts) == (12, 12, 2)
    grains: tuple[WindowGrain, ...] = ("day", "hour")
    for k in (5, 11):
        for grain in grains:
            _, released, _ = await handlers.release_trends(pool, _request(k, grain), noise, 100)
            shown = [c for w in released.windows if w.total for c in (w.total, *w.cells)]
            # Six networks: shown as six at k = 5, and not shown at all at k = 11.
            assert all(c.unique_visitors == 6 for c in shown), (k, grain, shown)
            assert bool(shown) == (k <= 6), (k, grain)
