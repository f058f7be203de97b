"""The analytics API process: ``python -m services.analytics.api``."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from prometheus_client import Counter

from services.analytics import handlers
from services.analytics.bootstrap import bootstrap
from services.analytics.config import AnalyticsSettings
from services.analytics.domain.release import keyed_noise
from services.analytics.domain.visitor import DailySalt
from services.analytics.routes import collector, trends
from shared.observability import Metrics
from shared.service import Runtime, serve, service_app

SALT_CHECK_SECONDS = 60.0  # how long yesterday's salt may outlive midnight, at most


async def _forget_stale_salts(salt: DailySalt) -> None:
    while True:
        await asyncio.sleep(SALT_CHECK_SECONDS)
        salt.forget_if_stale()


def build_app(settings: AnalyticsSettings) -> FastAPI:
    metrics = Metrics(settings.service_name)
    suppressed = Counter(
        "analytics_suppressed_visits_total",
        "Visits dropped at the edge, by the signal that forbade tracking them.",
        ["signal"],
        registry=metrics.registry,
    )

    @asynccontextmanager
    async def start(app: FastAPI) -> AsyncIterator[Runtime]:
        runtime = await bootstrap(settings, with_producer=True)
        assert runtime.producer is not None
        app.state.settings = settings
        app.state.pool = runtime.pool
        app.state.max_beacon_bytes = settings.analytics_max_beacon_bytes
        app.state.suppressed_counter = suppressed
        app.state.noise = keyed_noise(settings.analytics_noise_key.get_secret_value().encode())
        salt = DailySalt()
        forgetting = asyncio.get_running_loop().create_task(_forget_stale_salts(salt))
        app.state.collector = handlers.Collector(
            producer=runtime.producer,
            pool=runtime.pool,
            salt=salt,
            allowed_query_keys=frozenset(settings.analytics_allowed_query_keys),
            topic=settings.analytics_visits_topic,
            metrics=metrics,
        )
        try:
            yield runtime
        finally:
            forgetting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await forgetting
            await runtime.close()

    return service_app(
        service="analytics",
        title="iMT analytics",
        settings=settings,
        routers=[collector.router, trends.router],
        start=start,
        follow_revocations=True,
        metrics=metrics,
    )


def main() -> None:
    settings = AnalyticsSettings()
    serve(build_app(settings), service="analytics", port=settings.analytics_http_port,
          log_level=settings.log_level, host=settings.http_host)  # fmt: skip


if __name__ == "__main__":
    main()
