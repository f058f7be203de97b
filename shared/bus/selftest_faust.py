"""The bus self-test's Faust worker: probes through the envelope codec and the DLQ."""

from __future__ import annotations

from typing import Any

import asyncpg
import faust

from shared.bus.delivery import Delivery
from shared.bus.faust_app import EnvelopeSchema, accepted, create_faust_app, run_worker
from shared.bus.selftest import apply_probes_once
from shared.config import PlatformSettings


def build_probe_app(
    settings: PlatformSettings, dsn: str, topic: str, group: str, **overrides: Any
) -> faust.App:
    app = create_faust_app(group, settings, **overrides)
    source = app.topic(topic, schema=EnvelopeSchema())
    pools: list[asyncpg.Pool] = []

    @app.agent(source, concurrency=1)
    async def record_probes(stream: faust.StreamT) -> None:  # type: ignore[type-arg]
        if not pools:
            pools.append(await asyncpg.create_pool(dsn, min_size=1, max_size=2))
        async for item in accepted(stream, app, group):
            if isinstance(item, Delivery):
                async with pools[0].acquire() as conn:
                    await apply_probes_once(conn, group, [item])

    return app


def run_faust_worker(
    settings: PlatformSettings, dsn: str, topic: str, group: str, **overrides: Any
) -> None:
    app = build_probe_app(settings, dsn, topic, group, **overrides)
    run_worker(app)
