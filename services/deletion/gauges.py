"""What operators watch of the deletion pipeline, read from its database at each scrape.

A request that sits in one stage far longer than the schedule promised the user (a
store that never answers, backups that never expire) shows as the age of the oldest
request in that stage; the API serves these on ``/metrics``.
"""

from __future__ import annotations

from typing import get_args

from prometheus_client import CollectorRegistry, Gauge

from services.deletion import store
from services.deletion.domain.stages import FINAL
from shared.events.catalogue.deletion import DeletionStage
from shared.service import Runtime

OPEN_STAGES: tuple[str, ...] = tuple(s for s in get_args(DeletionStage) if s not in FINAL)


class DeletionGauges:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.requests = Gauge(
            "deletion_requests",
            "Deletion requests in each open stage.",
            ["stage"],
            registry=registry,
        )
        self.oldest = Gauge(
            "deletion_stage_oldest_seconds",
            "How long the longest-waiting request has been in its stage (0: none).",
            ["stage"],
            registry=registry,
        )

    async def refresh(self, runtime: Runtime) -> None:
        async with runtime.pool.acquire() as conn:
            stages = await store.open_stages(conn, sorted(FINAL))
        for stage in OPEN_STAGES:  # every stage, so one that empties reads 0
            count, oldest = stages.get(stage, (0, 0.0))
            self.requests.labels(stage).set(count)
            self.oldest.labels(stage).set(oldest)
