"""What operators watch of the deletion pipeline, read from its database at each scrape.

A request that sits in one stage far longer than the schedule promised the user (a
store that never answers, backups that never expire) shows as the age of the oldest
request in that stage, and one past GDPR's or CCPA's bound is counted as overdue; a
retention release no store answered in time is counted too. The API serves these on
``/metrics``.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import get_args

from prometheus_client import CollectorRegistry, Gauge

from services.deletion import store
from services.deletion.domain.schedule import overdue
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
        self.overdue = Gauge(
            "deletion_requests_overdue",
            "Requests whose active erasure is late against a legal bound (gdpr: one "
            "calendar month, ccpa: 45 days); the operator pipeline lists them.",
            ["regime"],
            registry=registry,
        )
        self.releases_escalated = Gauge(
            "deletion_releases_escalated",
            "Retention releases a store did not answer in time (the kept records it was "
            "told to erase may still be there); the operator pipeline lists them.",
            registry=registry,
        )

    async def refresh(self, runtime: Runtime) -> None:
        now = datetime.now(UTC)
        async with runtime.pool.acquire() as conn:
            stages = await store.open_stages(conn, sorted(FINAL))
            # No month is shorter: a request younger than this cannot be late yet.
            old = await store.open_requests_before(conn, now - timedelta(days=28))
            self.releases_escalated.set(await store.count_escalated_releases(conn))
        late = [overdue(tracked.request, now) for tracked in old]
        for regime in ("gdpr", "ccpa"):
            self.overdue.labels(regime).set(sum(1 for regimes in late if regimes[regime]))
        for stage in OPEN_STAGES:  # every stage, so one that empties reads 0
            count, oldest = stages.get(stage, (0, 0.0))
            self.requests.labels(stage).set(count)
            self.oldest.labels(stage).set(oldest)
