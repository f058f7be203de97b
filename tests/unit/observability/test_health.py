"""/healthz, /readyz and /metrics behave the same on every service."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Mapping

import httpx
import pytest
from fastapi import FastAPI

from shared.observability import (
    Metrics,
    ReadinessCheck,
    health_router,
    kafka_check,
    postgres_check,
)
from tests.unit.observability.conftest import client_for


async def passes() -> bool:
    return True


async def fails() -> bool:
    return False


async def raises() -> bool:
    raise ConnectionError("postgresql://accounts:hunter2-secret@db:5432/accounts unreachable")


async def hangs() -> bool:
    await asyncio.sleep(60)
    return True


async def _get(
    path: str,
    checks: Mapping[str, ReadinessCheck],
    metrics: Metrics | None = None,
    check_timeout: float = 0.2,
    before_scrape: Callable[[], Awaitable[None]] | None = None,
) -> httpx.Response:
    app = FastAPI()
    app.include_router(
        health_router(checks, metrics, timeout=check_timeout, before_scrape=before_scrape)
    )
    async with client_for(app) as client:
        return await client.get(path)


async def test_healthz_says_the_process_is_alive_even_when_dependencies_fail() -> None:
    response = await _get("/healthz", {"postgres": fails})
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readyz_is_200_when_every_check_passes() -> None:
    response = await _get("/readyz", {"postgres": passes, "kafka": passes})
    assert response.status_code == 200
    assert response.json() == {"status": "ready", "checks": {"postgres": "ok", "kafka": "ok"}}


async def test_readyz_is_503_naming_failing_and_timed_out_checks_without_their_errors() -> None:
    checks = {"postgres": raises, "kafka": fails, "vault": hangs, "smtp": passes}

    started = time.perf_counter()
    response = await _get("/readyz", checks)
    elapsed = time.perf_counter() - started

    assert response.status_code == 503
    assert response.json() == {
        "status": "not ready",
        "checks": {"postgres": "failing", "kafka": "failing", "vault": "timeout", "smtp": "ok"},
    }
    assert "hunter2" not in response.text
    assert "postgresql" not in response.text
    assert elapsed < 30  # the hanging check was cut off, not awaited for 60 s


async def test_checks_run_concurrently() -> None:
    # Each check waits for all five to have started: run one after another, the first
    # would wait for ever (and time out), so no clock is needed to tell.
    everyone = asyncio.Barrier(5)

    async def waits_for_the_others() -> bool:
        await everyone.wait()
        return True

    checks = {f"c{i}": waits_for_the_others for i in range(5)}
    response = await _get("/readyz", checks, check_timeout=30.0)
    assert response.status_code == 200
    assert set(response.json()["checks"].values()) == {"ok"}


def test_default_timeout_is_two_seconds() -> None:
    assert inspect.signature(health_router).parameters["timeout"].default == 2.0


async def test_metrics_endpoint_only_when_metrics_are_given() -> None:
    metrics = Metrics("accounts")
    metrics.outbox_backlog.set(4)

    response = await _get("/metrics", {}, metrics)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert "outbox_backlog 4.0" in response.text
    assert (await _get("/metrics", {})).status_code == 404


async def test_gauges_are_refreshed_before_each_scrape() -> None:
    metrics = Metrics("accounts")
    backlog = iter([3, 9])

    async def refresh() -> None:
        metrics.outbox_backlog.set(next(backlog))

    assert "outbox_backlog 3.0" in (await _get("/metrics", {}, metrics, before_scrape=refresh)).text
    assert "outbox_backlog 9.0" in (await _get("/metrics", {}, metrics, before_scrape=refresh)).text


async def test_a_failing_refresh_still_answers_with_the_last_values() -> None:
    metrics = Metrics("accounts")
    metrics.outbox_backlog.set(5)

    async def refresh() -> None:
        raise OSError("database unreachable")

    response = await _get("/metrics", {}, metrics, before_scrape=refresh)
    assert response.status_code == 200
    assert "outbox_backlog 5.0" in response.text


class FakePool:
    def __init__(self, result: object = 1, error: Exception | None = None) -> None:
        self.result, self.error, self.queries = result, error, list[str]()

    async def fetchval(self, query: str, *args: object) -> object:
        self.queries.append(query)
        if self.error is not None:
            raise self.error
        return self.result


async def test_postgres_check_selects_one() -> None:
    pool = FakePool()
    assert await postgres_check(pool)() is True
    assert pool.queries == ["SELECT 1"]
    assert await postgres_check(FakePool(result=None))() is False


def _probe(result: object) -> Callable[[], Awaitable[object]]:
    async def probe() -> object:
        return result

    return probe


@pytest.mark.parametrize(
    ("result", "ready"), [(None, True), ({"brokers": 1}, True), (False, False)]
)
async def test_kafka_check_passes_unless_the_probe_says_false(result: object, ready: bool) -> None:
    assert await kafka_check(_probe(result))() is ready


async def test_errors_of_helper_checks_make_the_service_not_ready() -> None:
    failing = postgres_check(FakePool(error=OSError("refused")))
    response = await _get("/readyz", {"postgres": failing})
    assert response.status_code == 503
    assert response.json()["checks"] == {"postgres": "failing"}
