"""Helpers of the analytics end-to-end tests: beacons, tokens, Kafka and database reads."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import string
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer

from services.analytics.config import AnalyticsSettings
from shared.auth import issue_token
from shared.bus.kafka_options import client_options
from shared.bus.lag import GroupWatch
from shared.config import DEV_TOKEN_PRIVATE_KEY, PlatformSettings
from shared.events import decode_envelope
from shared.events.topics import ANALYTICS_TRENDS, ANALYTICS_VISITS, all_topics

BEACON = "/api/analytics/beacon"
BEACONS = "/api/analytics/beacons"
WINDOW_TABLES = ("trend_windows", "trend_cells", "trend_cell_load_times", "trend_cell_visitors")
CELL_TABLES = WINDOW_TABLES[1:]  # those with a dimension and a value
ANALYTICS_TABLES = (*WINDOW_TABLES, "trend_releases")
# Every topic analytics writes or reads, their dead letters included.
ANALYTICS_TOPICS = tuple(t.name for t in all_topics() if t.name.startswith("analytics."))
# Hex digits as letters: a site with seven digits in a row is refused (a phone number's).
_NO_DIGITS = str.maketrans("0123456789", "ghijklmnop")


def unique_site() -> str:
    return f"t{uuid.uuid4().hex[:12].translate(_NO_DIGITS)}.example"


def marker() -> str:
    """A word no other visit has, for a path to be looked for later. Letters only: no
    scrubber takes it for an id, a token or a number, so a leak would show it as sent."""
    return "".join(secrets.choice(string.ascii_lowercase) for _ in range(20))


def browser(visitor: int | str) -> dict[str, str]:
    """Headers of a real-looking browser (its version from ``visitor``). Analytics counts
    networks, not browsers: another visitor needs :class:`Visitors`."""
    return {"User-Agent": f"Mozilla/5.0 (X11; Linux x86_64) Gecko/20100101 Firefox/{visitor}"}


def visitor_address(visitor: int | str) -> str:
    """A loopback address of the visitor's own /24 network (127.a.b.1, never 127.0.0.x)."""
    digest = hashlib.sha256(str(visitor).encode()).digest()
    return f"127.{1 + digest[0] % 254}.{digest[1]}.1"


class Visitors:
    """HTTP clients of distinct visitors: each connects from its own loopback network, so
    the gateway sees (and forwards) another client address, as for people on the web."""

    def __init__(self, platform: str) -> None:
        self._platform = platform
        self._clients: dict[str, httpx.AsyncClient] = {}

    def of(self, visitor: int | str) -> httpx.AsyncClient:
        address = visitor_address(visitor)
        if address not in self._clients:
            transport = httpx.AsyncHTTPTransport(local_address=address)
            self._clients[address] = httpx.AsyncClient(
                base_url=self._platform, transport=transport, timeout=30
            )
        return self._clients[address]

    async def post(self, visitor: int | str, url: str, **kwargs: Any) -> httpx.Response:
        headers = {**browser(visitor), **kwargs.pop("headers", {})}
        return await self.of(visitor).post(url, headers=headers, **kwargs)

    async def __aenter__(self) -> Visitors:
        return self

    async def __aexit__(self, *_: object) -> None:
        for client in self._clients.values():
            await client.aclose()


def beacon(site: str, page: str = "/", **fields: Any) -> dict[str, Any]:
    return {"beacon_id": str(uuid.uuid4()), "site": site, "page": page, **fields}


def operator_token(*roles: str) -> str:
    return issue_token(
        DEV_TOKEN_PRIVATE_KEY,
        kind="operator",
        roles=roles,  # type: ignore[arg-type]
        subject=str(uuid.uuid4()),
        session_id=str(uuid.uuid4()),
        ttl=timedelta(minutes=10),
    )


def user_token(age_band: str | None = None, tracking_opt_out: bool = False) -> str:
    return issue_token(
        DEV_TOKEN_PRIVATE_KEY,
        kind="user",
        subject=str(uuid.uuid4()),
        session_id=str(uuid.uuid4()),
        ttl=timedelta(minutes=10),
        age_band=age_band,
        tracking_opt_out=tracking_opt_out,
    )


def analyst() -> dict[str, str]:
    return {"Authorization": f"Bearer {operator_token('analyst')}"}


async def totals(client: httpx.AsyncClient, site: str, grain: str = "day") -> tuple[int, int]:
    """(visits, unique visitors) of a site summed over its windows of ``grain``."""
    response = await client.get(
        "/api/analytics/trends", params={"site": site, "grain": grain}, headers=analyst()
    )
    response.raise_for_status()
    windows = response.json()["windows"]
    return (
        sum(w["total"]["visits"] for w in windows),
        sum(w["total"]["unique_visitors"] for w in windows),
    )


async def wait_for_visits(
    client: httpx.AsyncClient, site: str, expected: int, timeout: float = 60.0
) -> int:
    """Poll the operators' view until the site's day total reaches ``expected``."""
    deadline = time.monotonic() + timeout
    while True:
        visits, _ = await totals(client, site)
        if visits >= expected or time.monotonic() > deadline:
            return visits
        await asyncio.sleep(0.3)


async def aggregated_so_far(settings: PlatformSettings, timeout: float = 60.0) -> None:
    """Until the aggregator has counted every visit on analytics.visits now: its group's
    committed offsets reach the topic's end as it is when called (it commits a batch's
    offsets only once the batch is counted). A visit the collector answered for before
    is on the topic, so its count, or a double count of it, shows in the windows after.
    """
    analytics = AnalyticsSettings(environment="test")
    group, topic = analytics.analytics_worker_group, analytics.analytics_visits_topic
    watch = GroupWatch(settings, {group: (topic,)})
    try:
        marks = await watch.ends(topic)
        assert marks, f"no partitions of {topic}"
        deadline = time.monotonic() + timeout
        while (behind := await watch.behind(group, marks)) > 0:
            assert time.monotonic() < deadline, f"{group} still {behind} visits behind"
            await asyncio.sleep(0.3)
    finally:
        await watch.close()


async def topic_records(
    settings: PlatformSettings, topic: str, site: str | None = None
) -> list[tuple[bytes | None, bytes]]:
    """(key, value) of every record of ``topic`` from the beginning to its current end;
    only those whose event names ``site`` (in ``data.site``) when it is given."""
    consumer = AIOKafkaConsumer(
        topic,
        **client_options(settings),
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        group_id=None,
    )
    await consumer.start()
    found: list[tuple[bytes | None, bytes]] = []
    try:
        for _ in range(150):  # group-less consumers get every partition once metadata came
            if consumer.assignment():
                break
            await asyncio.sleep(0.1)
        else:
            raise AssertionError(f"no partition of {topic} was assigned in 15 s")
        partitions = list(consumer.assignment())
        ends = await consumer.end_offsets(partitions)
        remaining = {tp for tp in partitions if ends[tp] > 0}
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000)
            for tp, records in batches.items():
                for record in records:
                    if record.value is not None and _about(record.value, site):
                        found.append((record.key, record.value))
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return found


async def trend_records(
    settings: PlatformSettings, site: str, visits: int, timeout: float = 100.0
) -> list[tuple[bytes | None, bytes]]:
    """The site's records on the trends topic once its minute windows count ``visits``
    (a window is published after its end and the grace period); fails on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        published = await topic_records(settings, ANALYTICS_TRENDS.name, site)
        counted = sum(
            data["visits"]
            for data in (decode_envelope(v).data for _, v in published)
            if data["window"] == "minute"
        )
        if counted >= visits:
            return published
        if time.monotonic() > deadline:
            raise AssertionError(f"trends count {counted} of {visits} visits after {timeout} s")
        await asyncio.sleep(2.0)


def _about(value: bytes, site: str | None) -> bool:
    if site is None:
        return True
    try:
        return decode_envelope(value).data.get("site") == site
    except ValueError:
        return site.encode() in value


# Ids only (consumer name, event uuid, time): it cannot hold a value, and it holds a
# mark for every beacon ever counted, far too many rows to read as text.
IDS_ONLY = {"bus_processed_events"}


async def dump_tables(settings: PlatformSettings, site: str) -> str:
    """Every table of the analytics database as text: the rows of ``site`` where a table
    has a site column, every row of the others (outbox, counts...) but IDS_ONLY."""
    conn = await asyncpg.connect(settings.database_dsn("analytics"))
    try:
        tables = await conn.fetch(
            "SELECT t.tablename, EXISTS (SELECT 1 FROM information_schema.columns c"
            "  WHERE c.table_name = t.tablename AND c.column_name = 'site') AS by_site"
            " FROM pg_tables t WHERE t.schemaname = 'public'"
        )
        assert {t["tablename"] for t in tables} >= set(ANALYTICS_TABLES) | IDS_ONLY
        parts = []
        for table in tables:
            if table["tablename"] in IDS_ONLY:
                continue
            where = " WHERE site = $1" if table["by_site"] else ""
            rows = await conn.fetch(
                f'SELECT t::text AS row FROM "{table["tablename"]}" t{where}',
                *([site] if where else []),
            )
            parts += [r["row"] for r in rows]
        return "\n".join(parts)
    finally:
        await conn.close()


# Public and partner releases hold final days only (ended IMT_ANALYTICS_VISITOR_SET_HOURS,
# 48 h, ago): a day three days back is final whatever the time of day.
FINAL_AGE = timedelta(days=3)


async def age_site(settings: PlatformSettings, site: str, by: timedelta = FINAL_AGE) -> None:
    """Move every window of ``site`` ``by`` into the past, as if its visits had come
    then: aggregated live, released as the final days they will be."""
    conn = await asyncpg.connect(settings.database_dsn("analytics"))
    try:
        async with conn.transaction():
            for table in WINDOW_TABLES:
                moved = "window_start = window_start - $2::interval"
                if table == "trend_windows":
                    moved += ", window_end = window_end - $2::interval"
                await conn.execute(f"UPDATE {table} SET {moved} WHERE site = $1", site, by)
    finally:
        await conn.close()


def final_day() -> datetime:
    """Start of the UTC day ``FINAL_AGE`` ago."""
    return (datetime.now(UTC) - FINAL_AGE).replace(hour=0, minute=0, second=0, microsecond=0)


def day_range(start: datetime) -> dict[str, str]:
    """``from`` and ``to`` of the UTC day holding ``start``."""
    day = start.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return {"from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat()}


async def only_a_sentinel_is_counted(
    client: httpx.AsyncClient, settings: PlatformSettings, site: str, absent: Sequence[str] = ()
) -> None:
    """Once a sentinel visit sent last is counted, anything sent before it would be too:
    it must be the site's only visit, in the windows and on the topic, and the only page
    of the site's cells. Nor is any of ``absent`` (the markers of the paths sent before
    it) on any analytics topic or in any analytics table."""
    sentinel = beacon(site, "/sentinel")
    assert (await client.post(BEACON, json=sentinel, headers=browser("s"))).status_code == 204
    assert await wait_for_visits(client, site, 1) == 1
    await asyncio.sleep(1.0)
    assert await totals(client, site) == (1, 1)
    records = await topic_records(settings, ANALYTICS_VISITS.name, site)
    assert len(records) == 1
    assert sentinel["beacon_id"].encode() in records[0][1]
    assert await site_pages(settings, site) == {"/sentinel"}
    if absent:
        await leaves_no_trace(settings, site, absent)


async def site_pages(settings: PlatformSettings, site: str) -> set[str]:
    """Every page value of the site's cells, load times and visitor sets."""
    conn = await asyncpg.connect(settings.database_dsn("analytics"))
    try:
        pages: set[str] = set()
        for table in CELL_TABLES:
            rows = await conn.fetch(
                f"SELECT DISTINCT value FROM {table} WHERE site = $1 AND dimension = 'page'", site
            )
            pages |= {r["value"] for r in rows}
        return pages
    finally:
        await conn.close()


async def leaves_no_trace(settings: PlatformSettings, site: str, texts: Sequence[str]) -> None:
    """None of ``texts`` is in any record of an analytics topic (every record: a leak
    need not name the site) nor in any analytics table."""
    for topic in ANALYTICS_TOPICS:
        for _, value in await topic_records(settings, topic):
            found = [text for text in texts if text.encode() in value]
            assert not found, (topic, found)
    stored = await dump_tables(settings, site)
    assert not [text for text in texts if text in stored]
