"""Query bounds of the analytics routes are refused with 422, never silently clamped; a
range with more windows than one answer takes is cut, and the answer says where."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.analytics.config import AnalyticsSettings
from services.analytics.domain.release import keyed_noise
from services.analytics.routes import trends
from services.analytics.routes.trends import MAX_SUPPRESSED_DAYS
from shared.auth import issue_token
from shared.config import DEV_TOKEN_PRIVATE_KEY, DEV_TOKEN_PUBLIC_KEY
from shared.observability import Problem, install_problem_handlers


class _Unreachable:
    """Stands for the pool: any use means the request got past validation."""

    def __getattr__(self, name: str) -> Any:
        raise Problem(503, "Store reached", slug="store-reached")


def _client() -> httpx.AsyncClient:
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(trends.router)
    app.state.token_public_key = DEV_TOKEN_PUBLIC_KEY
    app.state.pool = _Unreachable()
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


def _analyst() -> dict[str, str]:
    token = issue_token(
        DEV_TOKEN_PRIVATE_KEY, subject=str(uuid.uuid4()), session_id="s", kind="operator",
        ttl=timedelta(minutes=5), roles=("analyst",),
    )  # fmt: skip
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("days", [-5, -1, MAX_SUPPRESSED_DAYS + 1, 100_000])
async def test_suppressed_days_out_of_range_are_refused(days: int) -> None:
    async with _client() as client:
        refused = await client.get("/suppressed", params={"days": days}, headers=_analyst())
    assert refused.status_code == 422, refused.text
    assert [e["location"] for e in refused.json()["errors"]] == ["query.days"]


@pytest.mark.parametrize("days", [None, 0, 30, MAX_SUPPRESSED_DAYS])
async def test_suppressed_days_in_range_reach_the_store(days: int | None) -> None:
    params = {} if days is None else {"days": days}
    async with _client() as client:
        answer = await client.get("/suppressed", params=params, headers=_analyst())
    assert answer.status_code == 503, answer.text  # past validation


# -- ranges: defaults, and answers cut short that say so -----------------------------------

LIMIT = 25  # the fewest windows a request may consider: partner and public cover one day
HOUR = timedelta(hours=1)
SITE = "imt.example"


class _Store:
    """The analytics tables a release reads, in memory: windows of one site, each with a
    total of 20 visitors; every release recorded is kept."""

    def __init__(self, starts: Sequence[datetime] = ()) -> None:
        self.windows = [
            {"site": SITE, "grain": "hour", "window_start": s, "window_end": s + HOUR,
             "revision": 1}
            for s in starts
        ]  # fmt: skip
        self.releases: list[tuple[Any, ...]] = []

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[_Store]:
        yield self

    @asynccontextmanager
    async def transaction(self, **_: Any) -> AsyncIterator[None]:
        yield

    async def fetch(self, query: str, *args: Any) -> list[dict[str, Any]]:
        if "FROM trend_windows" in query:
            site, grain, start, end, limit = args
            found = [w for w in self.windows if (w["site"], w["grain"]) == (site, grain)
                     and start <= w["window_start"] < end]  # fmt: skip
            return found[:limit]  # stored in order
        if "FROM trend_cells" in query:
            return [
                {"site": s, "grain": g, "window_start": ws, "dimension": "total", "value": "",
                 "visits": 20, "unique_visitors": 20}
                for s, g, ws in zip(*args, strict=True)
            ]  # fmt: skip
        return []  # load times

    async def fetchval(self, query: str, *args: Any) -> datetime:
        assert "INSERT INTO trend_releases" in query
        self.releases.append(args)
        return datetime.now(UTC)


def _releasing(store: _Store) -> httpx.AsyncClient:
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(trends.router)
    app.state.token_public_key = DEV_TOKEN_PUBLIC_KEY
    app.state.pool = store
    app.state.settings = AnalyticsSettings(
        analytics_max_release_windows=LIMIT, analytics_visitor_set_hours=48
    )
    app.state.noise = keyed_noise(b"test")
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


Params = dict[str, datetime | str]


async def _trends(store: _Store, path: str = "", params: Params | None = None) -> dict[str, Any]:
    query = {"site": SITE}
    for name, value in (params or {}).items():
        query[name] = value.isoformat() if isinstance(value, datetime) else value
    async with _releasing(store) as client:
        answer = await client.get(f"/trends{path}", params=query, headers=_analyst())
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def _at(body: dict[str, Any], bound: str) -> datetime:
    return datetime.fromisoformat(body[bound])


def _recorded_to(store: _Store) -> datetime:
    # record_release's arguments: id, audience, site, grain, from, to, ...
    to: datetime = store.releases[-1][5]
    return to


# 07:00 on a day long final (public and partner releases hold final days only).
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=30)
START = DAY + timedelta(hours=7)


@pytest.mark.parametrize("stored", [LIMIT + 5, LIMIT + 1])
async def test_an_operators_answer_over_the_limit_ends_where_it_was_cut(stored: int) -> None:
    store = _Store([START + i * HOUR for i in range(stored)])
    asked = START + timedelta(days=3)
    first = await _trends(store, params={"grain": "hour", "from": START, "to": asked})
    assert len(first["windows"]) == LIMIT
    assert first["truncated"] is True
    # It ends where the first window left out starts, and says so, receipt included.
    assert _at(first, "to") == START + LIMIT * HOUR == _recorded_to(store)
    rest = await _trends(store, params={"grain": "hour", "from": _at(first, "to"), "to": asked})
    assert (len(rest["windows"]), rest["truncated"]) == (stored - LIMIT, False)
    assert _at(rest, "to") == asked == _recorded_to(store)


async def test_an_operators_answer_within_the_limit_is_whole() -> None:
    store = _Store([START + i * HOUR for i in range(LIMIT)])
    asked = START + timedelta(days=3)
    body = await _trends(store, params={"grain": "hour", "from": START, "to": asked})
    assert (len(body["windows"]), body["truncated"], _at(body, "to")) == (LIMIT, False, asked)


@pytest.mark.parametrize("path", ["/partner", "/public"])
@pytest.mark.parametrize("grain", ["hour", "day"])
async def test_a_threshold_release_is_cut_by_its_range_never_by_what_is_stored(
    path: str, grain: str
) -> None:
    # LIMIT windows: one day with its hours. From 07:00 on a final day, for a week.
    asked = START + timedelta(days=7)
    for store in (_Store(), _Store([START + i * HOUR for i in range(24 * 7)])):
        body = await _trends(store, path, {"grain": grain, "from": START, "to": asked})
        assert body["truncated"] is True
        # The end of the day 'from' falls in, whatever windows exist after it.
        assert _at(body, "to") == DAY + timedelta(days=1) == _recorded_to(store)
        assert _at(body, "from") == START


@pytest.mark.parametrize("path", ["/partner", "/public"])
async def test_a_threshold_release_within_its_days_is_whole(path: str) -> None:
    one_day: Params = {"grain": "hour", "from": DAY, "to": DAY + timedelta(days=1)}
    body = await _trends(_Store(), path, one_day)
    assert (body["truncated"], _at(body, "to")) == (False, DAY + timedelta(days=1))
    # Days not yet final are left out anyway (final_before): ending after them is no cut.
    final = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=2)
    late = datetime.now(UTC) + timedelta(days=30)
    body = await _trends(_Store(), path, {"from": final - timedelta(days=1), "to": late})
    assert (body["truncated"], _at(body, "to"), _at(body, "final_before")) == (False, late, final)


async def test_the_operators_default_range_is_the_two_days_up_to_now() -> None:
    before = datetime.now(UTC)
    body = await _trends(_Store())
    after = datetime.now(UTC)
    assert before <= _at(body, "to") <= after
    assert _at(body, "from") == _at(body, "to") - timedelta(days=2)


@pytest.mark.parametrize("path", ["", "/partner", "/public"])
@pytest.mark.parametrize("ahead", [timedelta(hours=1), timedelta(days=1, hours=1),
                                   timedelta(days=3)])  # fmt: skip
async def test_a_from_ahead_without_to_is_the_two_days_from_it(path: str, ahead: timedelta) -> None:
    start = datetime.now(UTC) + ahead
    body = await _trends(_Store(), path, {"from": start})
    assert (_at(body, "from"), _at(body, "to")) == (start, start + timedelta(days=2))
    assert body["windows"] == []


@pytest.mark.parametrize("path", ["", "/partner", "/public"])
async def test_a_from_after_to_is_refused(path: str) -> None:
    async with _releasing(_Store()) as client:
        refused = await client.get(
            f"/trends{path}",
            params={"site": SITE, "from": DAY.isoformat(), "to": DAY.isoformat()},
            headers=_analyst(),
        )
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"] == "'from' must be before 'to'."
