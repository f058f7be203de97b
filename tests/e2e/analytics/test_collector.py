"""The beacon, through the gateway, into Kafka and the aggregator's windows."""

import json

import httpx
import pytest

from shared.config import PlatformSettings
from tests.e2e.analytics.support import (
    BEACON,
    BEACONS,
    Visitors,
    aggregated_so_far,
    beacon,
    browser,
    marker,
    only_a_sentinel_is_counted,
    totals,
    unique_site,
    user_token,
    wait_for_visits,
)

IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) Mobile/15E148 Safari/604.1"
REFERRER = "https://news.example.org/a"


def _referred(i: int) -> bool:
    return i % 5 == 0  # 6 of 30


def _on_a_phone(i: int) -> bool:
    return i % 2 == 1  # 15 of 30


@pytest.mark.promise("P-03")
@pytest.mark.usefixtures("not_across_the_hour")  # unique visitors per hour are counted
async def test_n_visits_in_give_n_in_the_window(platform: str, settings: PlatformSettings) -> None:
    site = unique_site()
    visitors = 7
    bodies = [
        beacon(site, f"/page/{i % 3}", load_time_ms=100 + i,
               **({"referrer": REFERRER} if _referred(i) else {}))
        for i in range(30)
    ]  # fmt: skip
    async with Visitors(platform) as people:
        for i, body in enumerate(bodies):
            # The device class comes from the user agent (the beacon names none).
            headers = {"User-Agent": IPHONE} if _on_a_phone(i) else {}
            response = await people.post(i % visitors, BEACON, json=body, headers=headers)
            assert response.status_code == 204
        # A client that retries a beacon (same beacon id) is not counted twice.
        retry = await people.post(0, BEACON, json=bodies[0])
        assert retry.status_code == 204
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        counted = await wait_for_visits(client, site, len(bodies))
        # The retry was on Kafka before its answer: once the aggregator has counted all
        # that is there now, a double count of it would show.
        await aggregated_so_far(settings)
        for grain in ("minute", "hour", "day"):
            visits, uniques = await totals(client, site, grain)
            assert visits == len(bodies), grain
            if grain != "minute":  # minutes may split a visitor across two windows
                assert uniques == visitors, grain
        trends = await client.get(
            "/api/analytics/trends",
            params={"site": site, "grain": "day"},
            headers={"Authorization": "Bearer " + _analyst_token()},
        )
    assert counted == len(bodies)
    day = trends.json()["windows"][0]

    def cells(dimension: str) -> dict[str, int]:
        return {c["value"]: c["visits"] for c in day["cells"] if c["dimension"] == dimension}

    assert cells("page") == {"/page/0": 10, "/page/1": 10, "/page/2": 10}
    # The referrer kept as its host only; a beacon without one is "(direct)".
    referred = sum(map(_referred, range(len(bodies))))
    assert cells("referrer_host") == {"news.example.org": referred,
                                      "(direct)": len(bodies) - referred}  # fmt: skip
    phones = sum(map(_on_a_phone, range(len(bodies))))
    assert cells("device_class") == {"mobile": phones, "desktop": len(bodies) - phones}
    assert day["total"]["load_time_p50_ms"] is not None


def _analyst_token() -> str:
    from tests.e2e.analytics.support import operator_token

    return operator_token("analyst")


@pytest.mark.promise("P-22")
async def test_collection_needs_no_account_and_sets_no_cookie(platform: str) -> None:
    site = unique_site()
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        as_json = await client.post(BEACON, json=beacon(site, "/a"), headers=browser(1))
        # navigator.sendBeacon(url, string) sends text/plain; a cookie sent is ignored.
        as_text = await client.post(
            BEACON,
            content=json.dumps(beacon(site, "/b")),
            headers={**browser(2), "Content-Type": "text/plain;charset=UTF-8",
                     "Cookie": "session=abc"},
        )  # fmt: skip
        counted = await wait_for_visits(client, site, 2)
        gpc = await client.get("/api/analytics/.well-known/gpc.json")
        public = await client.get("/api/analytics/trends/public", params={"site": site})
    responses = [as_json, as_text, gpc, public]
    assert [r.status_code for r in responses] == [204, 204, 200, 200]
    assert counted == 2
    assert all("set-cookie" not in r.headers for r in responses)
    assert all("cookie" not in r.headers.get("vary", "").lower() for r in responses)
    assert gpc.json()["gpc"] is True
    assert gpc.json()["lastUpdate"]


async def _signals_leave_no_trace(
    platform: str, settings: PlatformSettings, headers: list[dict[str, str]]
) -> None:
    site = unique_site()
    markers = [marker() for _ in headers]  # each path looked for everywhere afterwards
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        for i, (extra, word) in enumerate(zip(headers, markers, strict=True)):
            response = await client.post(
                BEACON, json=beacon(site, f"/private/{word}"), headers={**browser(i), **extra}
            )
            assert response.status_code == 204  # the same answer: nothing is revealed
            assert "set-cookie" not in response.headers
        await only_a_sentinel_is_counted(client, settings, site, absent=markers)


@pytest.mark.promise("P-25")
async def test_dnt_and_gpc_visits_change_no_count_and_reach_no_topic(
    platform: str, settings: PlatformSettings
) -> None:
    await _signals_leave_no_trace(
        platform, settings, [{"DNT": "1"}, {"Sec-GPC": "1"}, {"DNT": "1", "Sec-GPC": "1"}]
    )


@pytest.mark.promise("P-26")
async def test_children_and_opted_out_users_are_not_tracked(
    platform: str, settings: PlatformSettings
) -> None:
    await _signals_leave_no_trace(
        platform,
        settings,
        [
            {"Authorization": f"Bearer {user_token(age_band='under_13')}"},
            {"Authorization": f"Bearer {user_token(tracking_opt_out=True)}"},
            {"Authorization": "Bearer not-a-valid-token"},
        ],
    )


# The bands accounts puts in a token (services/accounts/domain/age.py); all but
# "under_13" are counted (services/analytics/domain/signals.py).
@pytest.mark.parametrize("age_band", ["13_to_17", "adult", "unknown"])
async def test_signed_in_users_not_under_13_are_counted(platform: str, age_band: str) -> None:
    site = unique_site()
    token = user_token(age_band=age_band)
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        response = await client.post(
            BEACON, json=beacon(site), headers={**browser(1), "Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 204
        assert await wait_for_visits(client, site, 1) == 1


@pytest.mark.parametrize(
    ("headers", "content", "status"),
    [
        ({"User-Agent": "Googlebot/2.1 (+http://www.google.com/bot.html)"}, None, 403),
        ({}, None, 403),  # no user agent at all
        (browser(1), b"{not json", 400),
        (browser(1), b'{"site": "x.example", "page": "/"}', 400),
        (browser(1), json.dumps({"pad": "x" * 5000}).encode(), 413),
    ],
)
async def test_bots_malformed_and_oversized_beacons_are_refused(
    platform: str, headers: dict[str, str], content: bytes | None, status: int
) -> None:
    body = content if content is not None else json.dumps(beacon(unique_site())).encode()
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        response = await client.post(
            BEACON,
            content=body,
            headers={"User-Agent": "", **headers, "Content-Type": "application/json"},
        )
    assert response.status_code == status
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "x" * 100 not in response.text


@pytest.mark.promise("P-03")
async def test_a_batch_of_views_counts_each_view_once(
    platform: str, settings: PlatformSettings
) -> None:
    """An app's queued screen views, sent at once; the batch retried counts nothing twice."""
    site = unique_site()
    views = [beacon(site, f"/page/{i % 4}", load_time_ms=200 + i) for i in range(20)]
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        first = await client.post(BEACONS, json=views, headers=browser("app"))
        # sendBeacon sends a string as text/plain; a retry of the same batch is harmless.
        again = await client.post(
            BEACONS,
            content=json.dumps(views),
            headers={**browser("app"), "Content-Type": "text/plain;charset=UTF-8"},
        )
        assert (first.status_code, again.status_code) == (204, 204)
        assert await wait_for_visits(client, site, len(views)) == len(views)
        await aggregated_so_far(settings)  # the retried batch counted too: a double shows
        assert await totals(client, site) == (len(views), 1)  # one client, one visitor


@pytest.mark.promise("P-25")
async def test_a_batch_sent_with_dnt_or_gpc_changes_no_count_and_reaches_no_topic(
    platform: str, settings: PlatformSettings
) -> None:
    site = unique_site()
    markers = [marker() for _ in range(2)]  # each batch's paths looked for everywhere
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        for i, signal in enumerate([{"DNT": "1"}, {"Sec-GPC": "1"}]):
            views = [beacon(site, f"/private/{markers[i]}/{n}") for n in range(5)]
            response = await client.post(BEACONS, json=views, headers={**browser(i), **signal})
            assert response.status_code == 204  # the same answer: nothing is revealed
        await only_a_sentinel_is_counted(client, settings, site, absent=markers)


async def test_a_batch_with_a_malformed_view_is_refused_whole_naming_it(
    platform: str, settings: PlatformSettings
) -> None:
    site = unique_site()
    views = [beacon(site, "/ok"), beacon(site, "/bad", load_time_ms=-5), beacon(site, "/ok2")]
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        refused = await client.post(BEACONS, json=views, headers=browser(1))
        too_many = await client.post(
            BEACONS, json=[beacon(site) for _ in range(26)], headers=browser(1)
        )
        await only_a_sentinel_is_counted(client, settings, site)  # nothing of the refused
    assert (refused.status_code, too_many.status_code) == (400, 400)
    assert refused.headers["content-type"].startswith("application/problem+json")
    assert "beacon 1: invalid fields: load_time_ms" in refused.json()["detail"]
    assert "1 to 25 beacons, not 26" in too_many.json()["detail"]
