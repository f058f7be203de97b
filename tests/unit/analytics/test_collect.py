"""The collector hashes each visitor with the salt of the day it came (P-04), and answers a
dropped visit as a counted one whatever the database does (P-25, P-26)."""

from __future__ import annotations

import asyncio
import json
import uuid
from datetime import date, timedelta
from typing import Any, cast

import asyncpg
import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import Counter

from services.analytics import handlers
from services.analytics.config import AnalyticsSettings
from services.analytics.domain.beacon import Beacon
from services.analytics.domain.visitor import DailySalt, visitor_hash
from services.analytics.routes import collector as collector_routes
from shared.auth import issue_token
from shared.config import DEV_TOKEN_PRIVATE_KEY, DEV_TOKEN_PUBLIC_KEY
from shared.events.catalogue.analytics import VisitRecorded
from shared.observability import Metrics, install_problem_handlers

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
    assert first.salt_id == again.salt_id == salt.drawn().id  # the salt's name, sent along
    clock.day = date(2026, 3, 2)
    next_day = await _visit(collector)
    assert next_day.visitor_hash != first.visitor_hash
    assert next_day.salt_id != first.salt_id
    unsalted = visitor_hash(b"", SITE, ADDRESS)  # an empty key: plain BLAKE2b
    assert unsalted not in {first.visitor_hash, next_day.visitor_hash}
    # What reaches Kafka holds the hash, never the address or its network.
    assert len(producer.sent) == 3
    assert not [record for record in producer.sent if b"203.0.113" in record]


# -- a dropped visit is answered as a counted one, whatever the database does (P-25) ----


class _Unavailable:
    """A pool whose connections cannot be had: ``error`` raised, or never any answer."""

    def __init__(self, error: BaseException | None) -> None:
        self.error = error
        self.tried = 0

    def acquire(self) -> _Unavailable:
        self.tried += 1
        return self

    async def __aenter__(self) -> None:
        if self.error is not None:
            raise self.error
        await asyncio.sleep(3600)  # slow: the answer must not wait for it

    async def __aexit__(self, *_: object) -> None:
        return None


def _collector_app(pool: object, producer: object | None = None) -> FastAPI:
    """The collector's routes over ``pool`` (what the dropped visits' count uses) and
    ``producer`` (a stand-in taking every record by default)."""
    app = FastAPI()
    install_problem_handlers(app)
    app.include_router(collector_routes.router)
    metrics = Metrics("analytics-test")
    app.state.collector = handlers.Collector(
        cast(Any, producer or _Producer()), cast(Any, pool), DailySalt(), frozenset(),
        "analytics.visits", metrics,
    )  # fmt: skip
    app.state.suppressed_counter = Counter(
        "analytics_suppressed_visits_total", "Dropped.", ["signal"], registry=metrics.registry
    )
    app.state.max_beacon_bytes = 4096
    app.state.settings = AnalyticsSettings()
    app.state.token_public_key = DEV_TOKEN_PUBLIC_KEY
    return app


def _child_token() -> str:
    return issue_token(
        DEV_TOKEN_PRIVATE_KEY, subject=str(uuid.uuid4()), session_id="s", kind="user",
        ttl=timedelta(minutes=5), age_band="under_13",
    )  # fmt: skip


def _answer(response: httpx.Response) -> tuple[int, bytes, str | None]:
    return response.status_code, response.content, response.headers.get("cache-control")


@pytest.mark.promise("P-25")
@pytest.mark.promise("P-26")
@pytest.mark.parametrize(
    "error",
    [
        ConnectionRefusedError("connection refused"),
        asyncpg.CannotConnectNowError("the database system is starting up"),
        asyncpg.InterfaceError("pool is closed"),
        TimeoutError(),  # no free connection in time
        None,  # a database that does not answer at all
    ],
    ids=["refused", "starting", "closed", "pool-timeout", "slow"],
)
async def test_a_dropped_visit_gets_the_answer_of_a_counted_one_while_the_database_fails(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, error: BaseException | None
) -> None:
    monkeypatch.setattr(handlers, "SUPPRESSED_COUNT_SECONDS", 0.05)
    pool = _Unavailable(error)
    one = json.dumps({"beacon_id": str(uuid.uuid4()), "site": SITE, "page": "/"})
    token = _child_token()
    signals = [{"DNT": "1"}, {"Sec-GPC": "1"}, {"Authorization": f"Bearer {token}"}]
    transport = httpx.ASGITransport(app=_collector_app(pool))
    # Each dropped visit waits 50 ms at most for its count: far less than this, in all.
    async with (
        asyncio.timeout(10),
        httpx.AsyncClient(transport=transport, base_url="http://test") as client,
    ):
        for path, body in (("/beacon", one), ("/beacons", f"[{one}]")):
            headers = {"User-Agent": FIREFOX, "Content-Type": "application/json"}
            counted = await client.post(path, content=body, headers=headers)
            assert _answer(counted) == (204, b"", "no-store"), counted.text
            for signal in signals:
                dropped = await client.post(path, content=body, headers={**headers, **signal})
                assert _answer(dropped) == _answer(counted), (path, signal, dropped.text)
    assert pool.tried == 2 * len(signals)  # each dropped visit was to be counted
    # Each loss is logged, by its signal and count only.
    lost = [r.getMessage() for r in caplog.records if "not counted" in r.getMessage()]
    assert len(lost) == pool.tried
    assert not [m for m in lost if token in m or "127.0.0.1" in m or SITE in m]
