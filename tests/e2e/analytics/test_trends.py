"""Trend releases: operators see aggregates; partners and the public see no cell under k."""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from services.analytics.config import AnalyticsSettings
from services.analytics.domain.release import Cell, ReleasedWindow, Window
from shared.config import PlatformSettings
from shared.events import decode_envelope
from tests.e2e.analytics.support import (
    BEACON,
    FINAL_AGE,
    Visitors,
    age_site,
    analyst,
    beacon,
    browser,
    day_range,
    final_day,
    operator_token,
    trend_records,
    unique_site,
    wait_for_visits,
)
from tests.support.disclosure import (
    SMALL_SUM_BESIDE_A_SOLVED_ONE,
    counted,
    derivable_sums,
    members,
    recoverable,
    small,
)

# page -> distinct visitors (one visit each; "/home" also gets repeat visits)
PAGES = {"/home": 14, "/pricing": 11, "/blog": 6, "/help": 4, "/about": 1}


async def _visit_pages(platform: str, site: str) -> int:
    sent = 0
    visitor = 0
    async with Visitors(platform) as visitors:
        for page, count in PAGES.items():
            for _ in range(count):
                visitor += 1
                response = await visitors.post(
                    visitor, BEACON, json=beacon(site, page, device_class="desktop")
                )
                assert response.status_code == 204
                sent += 1
        for repeat in range(1, 4):  # a returning visitor adds visits, not visitors
            await visitors.post(repeat, BEACON, json=beacon(site, "/home"))
            sent += 1
    return sent


def _published_cells(body: dict[str, Any]) -> list[dict[str, Any]]:
    cells = []
    for window in body["windows"]:
        cells.append(window["total"])
        cells += window["cells"]
    return cells


@pytest.mark.promise("P-20")
@pytest.mark.usefixtures("not_across_the_hour")  # the day and its hour, held together
async def test_no_published_cell_is_under_k_nor_derivable(
    platform: str, settings: PlatformSettings
) -> None:
    site = unique_site()
    sent = await _visit_pages(platform, site)
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        assert await wait_for_visits(client, site, sent) == sent
        live = await _releases(client, site, {})
        # Today can still change: partners and the public get none of it yet.
        assert [w for a in live.values() for w in a.json()["windows"]] != []
        for (path, _), answer in live.items():
            if path:
                assert answer.json()["windows"] == [], path
                final = datetime.fromisoformat(answer.json()["final_before"])
                assert final <= datetime.now(UTC) - timedelta(hours=48), path
        # Three days on, the same counts are final and released.
        await age_site(settings, site)
        today = datetime.fromisoformat(live[("", "day")].json()["windows"][0]["window_start"])
        answers = await _releases(client, site, day_range(today - FINAL_AGE))
    assert {a.status_code for a in answers.values()} == {200}
    operator, public, partner = (answers[(p, "day")] for p in ("", "/public", "/partner"))
    # Day and hours held together, as one reader may: no count under k follows.
    family = _family_of(operator.json(), answers[("", "hour")].json())
    for path, k in (("/public", 11), ("/partner", 5)):
        by_start = {w["window_start"]: w for grain in ("day", "hour")
                    for w in answers[(path, grain)].json()["windows"]}  # fmt: skip
        released = [_released(w, by_start.get(w.label)) for w in family]
        assert small(family, recoverable(family, released), k) == set(), path
    raw_cells = operator.json()["windows"][0]["cells"]
    raw = {c["value"]: c for c in raw_cells if c["dimension"] == "page"}
    assert {p: raw[p]["unique_visitors"] for p in PAGES} == PAGES

    for answer, k in ((public.json(), 11), (partner.json(), 5)):
        receipt = answer["receipt"]
        assert (receipt["k"], receipt["audience"]) == (k, "public" if k == 11 else "partner")
        cells = _published_cells(answer)
        assert all(c["unique_visitors"] >= k for c in cells)
        window = answer["windows"][0]
        total = window["total"]["visits"]
        for dimension in ("page", "referrer_host", "device_class"):
            shown = {c["value"] for c in window["cells"] if c["dimension"] == dimension}
            hidden = [
                c for c in raw_cells if c["dimension"] == dimension and c["value"] not in shown
            ]
            # Never exactly one hidden cell: total minus the others would give it away.
            assert len(hidden) != 1, (dimension, hidden)
            if not hidden:
                assert (
                    sum(c["visits"] for c in window["cells"] if c["dimension"] == dimension)
                    == total
                )
        # Counted apart from the release: the operators' cells of the windows listed,
        # less those shown (a window left out whole is not counted, nor listed).
        assert receipt["cells_suppressed"] == _left_out(operator.json(), answer) > 0

    public_pages = {
        c["value"] for c in public.json()["windows"][0]["cells"] if c["dimension"] == "page"
    }
    partner_pages = {
        c["value"] for c in partner.json()["windows"][0]["cells"] if c["dimension"] == "page"
    }
    # k=11: /blog, /help, /about are small; two or more are hidden, no complement needed.
    assert public_pages == {"/home", "/pricing"}
    # k=5: only /help and /about are small, and they hide each other.
    assert partner_pages == {"/home", "/pricing", "/blog"}

    conn = await asyncpg.connect(settings.database_dsn("analytics"))
    try:
        receipts = await conn.fetch(
            "SELECT audience, k, epsilon, cells_suppressed FROM trend_releases WHERE id = ANY($1)",
            [public.json()["receipt"]["release_id"], partner.json()["receipt"]["release_id"]],
        )
    finally:
        await conn.close()
    assert sorted((r["audience"], r["k"]) for r in receipts) == [("partner", 5), ("public", 11)]


def _left_out(raw: dict[str, Any], answer: dict[str, Any]) -> int:
    """Cells of the windows ``answer`` lists that it does not show, counted from the
    operators' (unsuppressed) answer ``raw`` for the same range: total and cells."""
    by_start = {w["window_start"]: w for w in raw["windows"]}
    return sum(
        1 + len(by_start[w["window_start"]]["cells"]) - (w["total"] is not None) - len(w["cells"])
        for w in answer["windows"]
    )


async def _releases(
    client: httpx.AsyncClient, site: str, window: dict[str, str]
) -> dict[tuple[str, str], httpx.Response]:
    """The operators', the public's and the partners' answers, for days and hours."""
    return {
        (path, grain): await client.get(
            f"/api/analytics/trends{path}",
            params={"site": site, "grain": grain, **window},
            headers=analyst(),
        )
        for path in ("", "/public", "/partner")
        for grain in ("day", "hour")
    }


async def test_a_single_small_cell_takes_a_complement_with_it(
    platform: str, settings: PlatformSettings
) -> None:
    site = unique_site()
    async with Visitors(platform) as visitors:
        for visitor in range(1, 25):
            page = "/big" if visitor <= 12 else "/mid" if visitor <= 23 else "/tiny"
            await visitors.post(visitor, BEACON, json=beacon(site, page))
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        assert await wait_for_visits(client, site, 24) == 24
        await age_site(settings, site)
        public = await client.get(
            "/api/analytics/trends/public",
            params={"site": site, "grain": "day",
                    **day_range(final_day())},
        )  # fmt: skip
    window = public.json()["windows"][0]
    pages = {c["value"] for c in window["cells"] if c["dimension"] == "page"}
    # /tiny (1 visitor) is under k; /mid (11) must go too or 24 - 12 - 11 reveals /tiny.
    assert pages == {"/big"}
    assert window["total"]["visits"] == 24


@pytest.mark.promise("P-20")
async def test_one_client_posing_as_many_browsers_is_one_visitor_and_lifts_no_cell(
    platform: str, settings: PlatformSettings
) -> None:
    """A client that changes its user agent on every visit (to fill a small cell up to
    k around someone else's visit) is still one visitor: the cell stays under k."""
    site = unique_site()
    async with Visitors(platform) as visitors:
        for visitor in range(1, 13):
            await visitors.post(visitor, BEACON, json=beacon(site, "/home"))
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        for version in range(12):  # one network, twelve "browsers"
            await client.post(BEACON, json=beacon(site, "/lonely"), headers=browser(version))
        assert await wait_for_visits(client, site, 24) == 24
        operator = await client.get(
            "/api/analytics/trends", params={"site": site, "grain": "day"}, headers=analyst()
        )
        await age_site(settings, site)
        public = await client.get(
            "/api/analytics/trends/public",
            params={"site": site, "grain": "day", **day_range(final_day())},
        )
    pages = {c["value"]: c for c in operator.json()["windows"][0]["cells"]
             if c["dimension"] == "page"}  # fmt: skip
    assert (pages["/lonely"]["visits"], pages["/lonely"]["unique_visitors"]) == (12, 1)
    assert pages["/home"]["unique_visitors"] == 12
    assert public.status_code == 200, public.text
    # The release is there (the day and its total), so what it leaves out is left out:
    # /lonely, and /home with it (1 of 13 visitors would follow by subtraction).
    assert [w["total"]["visits"] for w in public.json()["windows"]] == [24]
    # Keys a release leaves out stay out: the operators' view has no final_before, a
    # total no dimension; the public one says which days are final.
    assert "final_before" not in operator.json()
    assert "final_before" in public.json()
    assert {"dimension", "value"}.isdisjoint(public.json()["windows"][0]["total"])
    shown = [c for w in public.json()["windows"] for c in w["cells"]]
    assert "/lonely" not in {c["value"] for c in shown}
    assert all(c["unique_visitors"] >= 11 for c in shown)


async def test_operator_views_need_an_analyst_or_admin(platform: str) -> None:
    site = unique_site()
    params = {"site": site}
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        anonymous = await client.get("/api/analytics/trends", params=params)
        support = await client.get(
            "/api/analytics/trends",
            params=params,
            headers={"Authorization": f"Bearer {operator_token('support')}"},
        )
        admin = await client.get(
            "/api/analytics/trends",
            params=params,
            headers={"Authorization": f"Bearer {operator_token('admin')}"},
        )
        partner_anonymous = await client.get("/api/analytics/trends/partner", params=params)
        before = await _dnt_today(client)
        dropped = await client.post(
            BEACON, json=beacon(site, "/x"), headers={**browser("dnt"), "DNT": "1"}
        )
        assert dropped.status_code == 204
        counts = await client.get("/api/analytics/suppressed", headers=analyst())
    assert [anonymous.status_code, support.status_code, admin.status_code] == [401, 403, 200]
    assert partner_anonymous.status_code == 401
    assert counts.status_code == 200
    assert all(set(c) == {"day", "signal", "count"} for c in counts.json()["counts"])
    assert _dnt_count(counts.json()) >= before + 1  # the view shows the drop just made


async def _dnt_today(client: httpx.AsyncClient) -> int:
    counts = await client.get("/api/analytics/suppressed", headers=analyst())
    assert counts.status_code == 200
    return _dnt_count(counts.json())


def _dnt_count(body: dict[str, Any]) -> int:
    today = datetime.now(UTC).date().isoformat()
    return sum(c["count"] for c in body["counts"] if c["signal"] == "dnt" and c["day"] == today)


async def test_closed_windows_reach_the_compacted_trends_topic(
    platform: str, settings: PlatformSettings
) -> None:
    site = unique_site()
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        for visitor in range(3):
            await client.post(BEACON, json=beacon(site, "/t"), headers=browser(visitor))
        assert await wait_for_visits(client, site, 3) == 3
    minutes = [
        (key, data)
        for key, data in (
            (k, decode_envelope(v).data) for k, v in await trend_records(settings, site, 3)
        )
        if data["window"] == "minute"
    ]
    assert sum(data["visits"] for _, data in minutes) == 3
    for key, data in minutes:
        start = datetime.fromisoformat(data["window_start"])
        assert key == f"{site}|minute|{start.isoformat()}".encode()
        assert data["revision"] >= 1
        assert datetime.fromisoformat(data["window_end"]) - start == timedelta(minutes=1)


# hour -> page -> (visits, unique visitors). /x and /y are small every hour, and hold k
# visits together (else their sum, the total minus the published pages, would be a
# count under k, and a published page would go with them).
HOURS = {
    10: {"/home": (40, 30), "/pricing": (30, 25), "/blog": (6, 6), "/x": (6, 6), "/y": (5, 5)},
    11: {"/home": (50, 35), "/pricing": (30, 24), "/blog": (20, 20), "/x": (6, 6), "/y": (5, 5)},
    12: {"/home": (45, 33), "/pricing": (26, 20), "/blog": (30, 29), "/x": (6, 6), "/y": (5, 5)},
}


@pytest.mark.promise("P-20")
async def test_an_hour_hides_what_its_day_would_give_away_whatever_range_is_asked(
    platform: str, settings: PlatformSettings
) -> None:
    # Windows of a past day, written as the aggregator would (already published to the
    # topic, so it leaves them alone): /blog is under k at 10:00 only.
    # Three days ago: a final day, released; well within retention, so no clean-up.
    site, day = unique_site(), final_day()
    conn = await asyncpg.connect(settings.database_dsn("analytics"))
    try:
        for hour, pages in HOURS.items():
            cells = [("total", "", sum(v for v, _ in pages.values()),
                      sum(u for _, u in pages.values()))]  # fmt: skip
            cells += [("page", page, v, u) for page, (v, u) in pages.items()]
            await _store(conn, site, "hour", day + timedelta(hours=hour), cells)
        async with httpx.AsyncClient(base_url=platform, timeout=30) as client:

            async def pages_shown(start: datetime, end: datetime) -> dict[int, set[str]]:
                answer = await client.get(
                    "/api/analytics/trends/public",
                    params={"site": site, "grain": "hour", "from": start.isoformat(),
                            "to": end.isoformat()},
                )  # fmt: skip
                assert answer.status_code == 200, answer.text
                return {
                    datetime.fromisoformat(w["window_start"]).hour: {
                        c["value"] for c in w["cells"] if c["dimension"] == "page"
                    }
                    for w in answer.json()["windows"]
                }

            whole_day = await pages_shown(day, day + timedelta(days=1))
            eleven_only = await pages_shown(day + timedelta(hours=11), day + timedelta(hours=12))
    finally:
        await forget(conn, site)
        await conn.close()
    # Published at 11:00 and noon, /blog's day count minus them would be 10:00's 6
    # visits: it goes at 11:00 (the smaller) too, also when 11:00 is all that is asked.
    assert whole_day == {10: {"/home", "/pricing"}, 11: {"/home", "/pricing"},
                         12: {"/home", "/pricing", "/blog"}}  # fmt: skip
    assert eleven_only == {11: whole_day[11]}


StoredCell = tuple[str, str, int, int]  # dimension, value, visits, unique visitors


async def _store(
    conn: asyncpg.Connection, site: str, grain: str, start: datetime, cells: list[StoredCell]
) -> None:
    """A window as the aggregator writes it (already published to the topic, so the
    worker leaves it alone)."""
    length = timedelta(days=1) if grain == "day" else timedelta(hours=1)
    await conn.execute(
        "INSERT INTO trend_windows VALUES ($1, $2, $3, $4, 1, 1)",
        site, grain, start, start + length,
    )  # fmt: skip
    await conn.executemany(
        "INSERT INTO trend_cells VALUES ($1, $2, $3, $4, $5, $6, $7)",
        [(site, grain, start, *cell) for cell in cells],
    )


async def _store_family(
    conn: asyncpg.Connection, site: str, windows: list[Window], starts: dict[str, datetime]
) -> None:
    """A day and its hours (``counted`` windows, the day's parent None) at ``starts``."""
    for window in windows:
        grain = "day" if window.parent is None else "hour"
        cells = [(c.dimension, c.value, c.visits, c.unique_visitors)
                 for c in (window.total, *window.cells)]  # fmt: skip
        await _store(conn, site, grain, starts[window.label], cells)


# A quiet day: one visit at 09:00, one at 10:00, eleven at 11:00 (one visitor each).
QUIET_DAY = {
    9: [("/repair", "phone")],
    10: [("/repair", "phone")],
    11: [("/repair", "phone")] * 9 + [("/blog", "phone"), ("/pricing", "phone")],
}


def _family_of(days: dict[str, Any], hours: dict[str, Any]) -> list[Window]:
    """The operators' (unsuppressed) day and hour windows, labelled by their start."""

    def window(w: dict[str, Any], parent: str | None) -> Window:
        total = Cell("total", "", w["total"]["visits"], w["total"]["unique_visitors"])
        cells = [Cell(c["dimension"], c["value"], c["visits"], c["unique_visitors"])
                 for c in w["cells"]]  # fmt: skip
        return Window(w["window_start"], total, cells, parent)

    def day_of(hour: dict[str, Any]) -> str:
        start = datetime.fromisoformat(hour["window_start"])
        [day] = [d for d in days["windows"]
                 if datetime.fromisoformat(d["window_start"]) <= start
                 < datetime.fromisoformat(d["window_end"])]  # fmt: skip
        return str(day["window_start"])

    return [window(d, None) for d in days["windows"]] + [
        window(h, day_of(h)) for h in hours["windows"]
    ]


def _released(window: Window, answer: dict[str, Any] | None) -> ReleasedWindow:
    """An API window as the release it was (a window left out was hidden whole)."""
    label = window.label
    if answer is None:
        return ReleasedWindow(label, None, [], 1 + len(window.cells))
    shown = [Cell(c["dimension"], c["value"], c["visits"], c["unique_visitors"])
             for c in answer["cells"]]  # fmt: skip
    total = answer["total"]
    return ReleasedWindow(
        label, Cell("total", "", total["visits"], total["unique_visitors"]), shown,
        answer["suppressed_cells"],
    )  # fmt: skip


@pytest.mark.promise("P-20")
async def test_a_day_and_its_hours_released_together_give_no_small_count_away(
    platform: str, settings: PlatformSettings
) -> None:
    # Released one grain at a time, the hours hide 09:00 and 10:00 whole and 11:00's
    # pages, and the day shows /repair (11) and its total (13). Held together: 13 - 11
    # visits came outside 11:00, each hour there holding only /repair, so /repair at
    # 11:00 is 11 - 2 = 9 visitors, under k. One family, audited, gives nothing away.
    site, day = unique_site(), final_day()
    starts = {"day": day, **{str(h): day + timedelta(hours=h) for h in QUIET_DAY}}
    every = [v for visits in QUIET_DAY.values() for v in visits]
    windows = [counted("day", every, None)] + [
        counted(str(h), visits, "day") for h, visits in QUIET_DAY.items()
    ]

    conn = await asyncpg.connect(settings.database_dsn("analytics"))
    try:
        await _store_family(conn, site, windows, starts)
        answers: dict[str, dict[datetime, dict[str, Any]]] = {}
        receipts: dict[tuple[str, str], tuple[dict[str, Any], int]] = {}
        stored_at = {starts[w.label]: w for w in windows}
        async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
            for audience in ("public", "partner"):
                shown: dict[datetime, dict[str, Any]] = {}
                for grain in ("day", "hour"):
                    answer = await client.get(
                        f"/api/analytics/trends/{audience}",
                        params={"site": site, "grain": grain, "from": day.isoformat(),
                                "to": (day + timedelta(days=1)).isoformat()},
                        headers=analyst(),
                    )  # fmt: skip
                    assert answer.status_code == 200, answer.text
                    listed = 0  # cells of the windows listed that are not shown
                    for w in answer.json()["windows"]:
                        start = datetime.fromisoformat(w["window_start"])
                        shown[start] = w
                        raw = stored_at[start]  # as written above, unsuppressed
                        listed += 1 + len(raw.cells) - (w["total"] is not None) - len(w["cells"])
                    receipts[(audience, grain)] = (answer.json()["receipt"], listed)
                answers[audience] = shown
        # The answer counts the cells hidden in the windows it lists only: 09:00 and
        # 10:00, left out whole, would otherwise show by their count that they exist.
        # The receipt kept for the audit counts them too.
        for (audience, grain), (receipt, listed) in receipts.items():
            assert receipt["cells_suppressed"] == listed, (audience, grain)
        assert any(listed for _, listed in receipts.values())  # something was hidden
        receipt, listed = receipts[("public", "hour")]
        stored = await conn.fetchval(
            "SELECT cells_suppressed FROM trend_releases WHERE id = $1",
            uuid.UUID(receipt["release_id"]),
        )
        assert stored > listed
    finally:
        await forget(conn, site)
        await conn.close()
    released = {
        audience: [_released(w, by_start.get(starts[w.label])) for w in windows]
        for audience, by_start in answers.items()
    }
    # The day is released (its /repair and total at least): there was something to hide.
    assert released["public"][0].total is not None
    ks = AnalyticsSettings()
    for audience, k in (("public", ks.analytics_public_k), ("partner", ks.analytics_partner_k)):
        assert small(windows, recoverable(windows, released[audience]), k) == set(), audience
    # What the public sees, partners see too: holding both says no more than theirs.
    for public, partner in zip(released["public"], released["partner"], strict=True):
        if public.total is not None:
            assert partner.total is not None
            assert {(c.dimension, c.value) for c in public.cells} <= {
                (c.dimension, c.value) for c in partner.cells
            }


async def forget(conn: asyncpg.Connection, site: str) -> None:
    for table in ("trend_cells", "trend_windows"):
        await conn.execute(f"DELETE FROM {table} WHERE site = $1", site)


# A review's case at the public k: a sum of hidden counts under k followed (see there).
SMALL_SUM_DAY = SMALL_SUM_BESIDE_A_SOLVED_ONE


@pytest.mark.promise("P-20")
async def test_no_sum_of_hidden_counts_under_k_follows_from_both_grains(
    platform: str, settings: PlatformSettings
) -> None:
    site, day = unique_site(), final_day()
    every = [v for visits in SMALL_SUM_DAY for v in visits]
    windows = [counted("day", every, None)] + [
        counted(str(h), visits, "day") for h, visits in enumerate(SMALL_SUM_DAY)
    ]
    starts = {"day": day, **{str(h): day + timedelta(hours=h) for h in range(len(SMALL_SUM_DAY))}}
    conn = await asyncpg.connect(settings.database_dsn("analytics"))
    try:
        await _store_family(conn, site, windows, starts)
        async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
            answers = await _releases(client, site, day_range(day))
    finally:
        await forget(conn, site)
        await conn.close()
    assert {a.status_code for a in answers.values()} == {200}
    who = members(windows, SMALL_SUM_DAY)
    ks = AnalyticsSettings()
    for path, k in (("/public", ks.analytics_public_k), ("/partner", ks.analytics_partner_k)):
        shown = {(grain, datetime.fromisoformat(w["window_start"])): w for grain in ("day", "hour")
                 for w in answers[(path, grain)].json()["windows"]}  # fmt: skip
        released = [
            _released(w, shown.get(("day" if w.parent is None else "hour", starts[w.label])))
            for w in windows
        ]
        assert released[0].total is not None, path  # the day is shown: there is a release
        assert derivable_sums(windows, released, who, k) == set(), path
