"""``/healthz``, ``/readyz`` and ``/metrics``: the same three endpoints on every service.

Liveness says only that the process answers: restarting it cannot fix a database
outage, so dependencies are checked by readiness alone, which takes the instance out of
rotation instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, Protocol

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from shared.observability.metrics import Metrics

log = logging.getLogger(__name__)

ReadinessCheck = Callable[[], Awaitable[bool]]
CheckResult = Literal["ok", "failing", "timeout"]

DEFAULT_CHECK_TIMEOUT = 2.0


async def run_check(check: ReadinessCheck, limit: float = DEFAULT_CHECK_TIMEOUT) -> CheckResult:
    """Outcome of one check; a check that raises is failing, one that hangs timed out."""
    try:
        async with asyncio.timeout(limit):
            passed = await check()
    except TimeoutError:
        return "timeout"
    except Exception as error:  # any failure means "not ready"
        # The type only: driver errors may quote a DSN, a host or a query.
        log.warning("readiness check raised %s", type(error).__name__)
        return "failing"
    return "ok" if passed is True else "failing"


async def run_checks(
    checks: Mapping[str, ReadinessCheck], limit: float = DEFAULT_CHECK_TIMEOUT
) -> dict[str, CheckResult]:
    """Every check, concurrently, each limited to ``limit`` seconds.

    Concurrently so that readiness answers within one limit, before the probe gives up.
    """
    names = list(checks)
    results = await asyncio.gather(*(run_check(checks[name], limit) for name in names))
    return dict(zip(names, results, strict=True))


def health_router(
    checks: Mapping[str, ReadinessCheck] | Callable[[], Mapping[str, ReadinessCheck]],
    metrics: Metrics | None = None,
    *,
    timeout: float = DEFAULT_CHECK_TIMEOUT,
    before_scrape: Callable[[], Awaitable[None]] | None = None,
) -> APIRouter:
    """Router serving ``/healthz``, ``/readyz`` and, given ``metrics``, ``/metrics``.

    ``checks`` may be a callable, asked at each request: a service's checks need its
    runtime, which exists only once the app's lifespan has started. ``before_scrape``
    updates gauges read from elsewhere; a failure leaves their last values (the scrape
    still answers, and /readyz tells the outage).
    """
    router = APIRouter(tags=["operations"])

    @router.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get("/readyz", response_model=None)
    async def readyz() -> JSONResponse:
        results = await run_checks(checks() if callable(checks) else checks, timeout)
        if all(result == "ok" for result in results.values()):
            return JSONResponse({"status": "ready", "checks": results})
        return JSONResponse({"status": "not ready", "checks": results}, status_code=503)

    if metrics is not None:

        @router.get("/metrics", response_model=None)
        async def metrics_endpoint(request: Request) -> Response:
            if before_scrape is not None:
                try:
                    await asyncio.wait_for(before_scrape(), timeout)
                except Exception as exc:
                    log.warning("metrics refresh failed (%s)", type(exc).__name__)
            payload, content_type = metrics.render(request.headers.get("accept"))
            return Response(payload, media_type=content_type)

    return router


class Fetches(Protocol):
    """What :func:`postgres_check` needs: an asyncpg ``Pool`` or ``Connection`` has it."""

    async def fetchval(self, query: str, *args: object) -> Any: ...


def postgres_check(pool: Fetches) -> ReadinessCheck:
    """Readiness check running ``SELECT 1`` through ``pool``."""

    async def check() -> bool:
        return bool(await pool.fetchval("SELECT 1") == 1)

    return check


def kafka_check(probe: Callable[[], Awaitable[object]]) -> ReadinessCheck:
    """Readiness check passing when ``probe`` returns anything but ``False`` without raising.

    Takes a probe rather than a client so that it suits producers, consumers and Faust
    alike, e.g. ``kafka_check(producer.client.fetch_all_metadata)``, which makes a round
    trip to a broker (cached cluster metadata would not notice an outage).
    """

    async def check() -> bool:
        return await probe() is not False

    return check
