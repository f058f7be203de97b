"""What operators watch of the notifier, read from its database at each scrape.

The sending loops run in the worker, which has no HTTP port; what they leave behind is
in the database: notices held back after failures, emails waiting or given up on, and
how late the most overdue email is. The API serves these on ``/metrics``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Gauge

from services.notifier import store
from shared.service import Runtime


class NotifierGauges:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.held = Gauge(
            "notices_held",
            "Notices held back after failing (retried when the hold ends; see the ops view).",
            registry=registry,
        )
        self.deliveries = Gauge(
            "email_deliveries",
            "Emails pending, being sent, or dead (given up on; replayable from the ops view).",
            ["status"],
            registry=registry,
        )
        # What EmailsGivenUp reads. Not increase() over email_deliveries{status="dead"}:
        # that count falls when dead emails are replayed or erased, and increase() takes
        # any fall for a counter reset, adding what is left as new.
        self.dead_last_hour = Gauge(
            "email_dead_last_hour",
            "Emails given up on in the last hour (not replayed since).",
            registry=registry,
        )
        self.in_doubt = Gauge(
            "email_in_doubt",
            "Dead emails the mail server may have received (a sender stopped, or the "
            "connection was lost, after handing it over): not replayed in bulk.",
            registry=registry,
        )
        self.overdue = Gauge(
            "email_oldest_due_seconds",
            "How long the most overdue email has been due (0: none is).",
            registry=registry,
        )

    async def refresh(self, runtime: Runtime) -> None:
        async with runtime.pool.acquire() as conn:
            state = await store.ops_gauges(conn)
        self.held.set(state.held)
        for status, count in state.deliveries.items():
            self.deliveries.labels(status).set(count)
        self.overdue.set(state.oldest_due_seconds)
        self.dead_last_hour.set(state.dead_last_hour)
        self.in_doubt.set(state.in_doubt)
