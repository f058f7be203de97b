"""Who sent a visit is in no analytics record (P-04): not the client's address, nor its
network, nor the id of the signed-in user whose token came with the beacon.

The other P-04 tests look for values planted in a beacon's content. What a visit says
about its sender without any content is the connection itself (the address the gateway
forwards, from which the visitor hash is made) and, from an app, the user's access
token. Here a real account (signed up through accounts) sends beacons with its token
from three client addresses of their own; each address, its /24 network and the user's
ids are then looked for in every analytics table, every record of every analytics.*
topic and every log of the analytics processes."""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest

from deploy.local.layout import Layout
from shared.config import PlatformSettings
from shared.events import decode_envelope
from shared.events.topics import ANALYTICS_TRENDS, ANALYTICS_VISITS
from tests.e2e.accounts.support import BusTail, active_user, start_tail, tables_holding
from tests.e2e.analytics.support import (
    ANALYTICS_TOPICS,
    BEACON,
    BEACONS,
    age_site,
    analyst,
    beacon,
    browser,
    day_range,
    final_day,
    topic_records,
    totals,
    trend_records,
    unique_site,
    wait_for_visits,
)
from tests.e2e.platform.journeys import needs
from tests.support.mailbox import eventually

ADDRESSES = 3  # client addresses, each of its own /24 network
VISITS_EACH = 4  # per address: one anonymous, one signed in, a signed-in batch of two


def _client_addresses() -> list[str]:
    """Fresh loopback addresses of distinct /24 networks (never 127.0.x.x, the stack's),
    drawn at random: no earlier run left them anywhere."""
    networks: set[tuple[int, int]] = set()
    while len(networks) < ADDRESSES:
        networks.add((1 + secrets.randbelow(254), secrets.randbelow(256)))
    return [f"127.{a}.{b}.{2 + secrets.randbelow(253)}" for a, b in sorted(networks)]


def _forms(address: str) -> list[str]:
    """An address as a record could hold it: whole, as its /24 network (the truncated
    address the visitor hash is made of), its network's prefix, and with dashes."""
    network = address.rsplit(".", 1)[0]
    return [address, f"{network}.0", f"{network}.", address.replace(".", "-")]


@pytest.fixture
async def bus(settings: PlatformSettings) -> AsyncIterator[BusTail]:
    tail = await start_tail(settings)
    yield tail
    assert tail.task is not None
    tail.task.cancel()
    await tail.consumer.stop()


async def _visit(platform: str, address: str, site: str, token: str, n: int) -> None:
    """From ``address``: an anonymous beacon, one with the user's token, and a batch of
    two with it (an app's queue of screen views)."""
    signed_in = {"Authorization": f"Bearer {token}"}
    transport = httpx.AsyncHTTPTransport(local_address=address)
    async with httpx.AsyncClient(base_url=platform, transport=transport, timeout=30) as client:
        sent = [
            await client.post(BEACON, json=beacon(site, f"/a{n}"), headers=browser(n)),
            await client.post(
                BEACON, json=beacon(site, f"/b{n}"), headers={**browser(n), **signed_in}
            ),
            await client.post(
                BEACONS,
                json=[{**beacon(site, screen=f"c{n}"), "page": None}, beacon(site, f"/d{n}")],
                headers={**browser(n), **signed_in},
            ),
        ]
    assert [r.status_code for r in sent] == [204, 204, 204], [r.text for r in sent]


def _analytics_logs() -> dict[str, bytes]:
    logs = {log.name: log.read_bytes() for log in Layout.from_env().logs.glob("analytics-*.log")}
    # The collector's and the aggregator's logs at least, written by the running processes.
    assert {"analytics-api.log", "analytics-worker.log"} <= logs.keys(), sorted(logs)
    assert all(logs[name] for name in ("analytics-api.log", "analytics-worker.log"))
    return logs


def _grains(published: list[tuple[bytes | None, bytes]]) -> set[str]:
    return {decode_envelope(value).data["window"] for _, value in published}


@pytest.mark.promise("P-04")
async def test_no_client_address_network_or_signed_in_user_id_is_kept(
    platform: str, settings: PlatformSettings, bus: BusTail
) -> None:
    needs("accounts", "analytics")
    site = unique_site()
    addresses = _client_addresses()
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        user = await active_user(client, bus)
        claims = jwt.decode(user.access, options={"verify_signature": False})
        assert claims["sub"] == user.id
        await asyncio.gather(
            *(_visit(platform, a, site, user.access, n) for n, a in enumerate(addresses))
        )
        expected = ADDRESSES * VISITS_EACH
        # The control: every visit was counted, the signed-in ones too (an adult who did
        # not opt out is counted), and the collector told the three networks apart, so
        # it did see each address; the search below is of records that exist.
        assert await wait_for_visits(client, site, expected) == expected
        await asyncio.sleep(1.0)  # a double count would show by now
        assert await totals(client, site) == (expected, ADDRESSES)
        user_ids = [user.id, user.id.replace("-", ""), claims["sid"]]
        needles = [form for a in addresses for form in _forms(a)] + user_ids
        # While the visits are live, the day's visitor hashes held with them: the same
        # search finds the site (in the visitor sets too), and none of the needles.
        assert "analytics.trend_cell_visitors" in await tables_holding(
            settings, [site], databases=("analytics",)
        )
        assert await tables_holding(settings, needles, databases=("analytics",)) == []
        # Three days on, as the clock would have it: every window of the site is closed,
        # so published (minute, hour and day), and its day is released to partners and
        # the public, as anyone may ask.
        await age_site(settings, site)
        await trend_records(settings, site, expected, timeout=30)
        await eventually(
            lambda: topic_records(settings, ANALYTICS_TRENDS.name, site),
            lambda published: _grains(published) == {"minute", "hour", "day"},
            timeout=30,
        )
        answers = [
            await client.get(
                f"/api/analytics/trends{path}",
                params={"site": site, "grain": grain, **day_range(final_day())},
                headers=analyst(),
            )
            for path in ("", "/public", "/partner")
            for grain in ("day", "hour")
        ]
    assert [a.status_code for a in answers] == [200] * len(answers)
    # The same searches do find what is there: the site, in the tables, on both topics.
    stored = await tables_holding(settings, [site], databases=("analytics",))
    assert {"analytics.trend_windows", "analytics.trend_cells", "analytics.trend_releases"} <= set(
        stored
    )
    assert len(await topic_records(settings, ANALYTICS_VISITS.name, site)) == expected
    assert {ANALYTICS_VISITS.name, ANALYTICS_TRENDS.name} <= set(ANALYTICS_TOPICS)

    assert await tables_holding(settings, needles, databases=("analytics",)) == []
    on_topics = {
        (topic, needle)
        for topic in ANALYTICS_TOPICS
        for _, value in await topic_records(settings, topic)
        for needle in needles
        if needle.encode() in value
    }
    assert on_topics == set()
    logs = await asyncio.to_thread(_analytics_logs)
    logged = {(name, n) for name, text in logs.items() for n in needles if n.encode() in text}
    assert logged == set()
    answered = {(str(a.url), n) for a in answers for n in needles if n in a.text}
    assert answered == set()
