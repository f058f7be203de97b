"""The instruments every service exposes, in a registry of its own, and the HTTP middleware.

A registry per :class:`Metrics` instead of prometheus_client's global one: tests and
processes hosting several apps can build as many as they need without "Duplicated
timeseries" errors.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

UNMATCHED_ROUTE = "<unmatched>"
"""Route label of requests no route matched: their raw path must not become a label."""

_KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}
)


class Fetches(Protocol):
    """An asyncpg ``Pool`` or ``Connection``: what the outbox gauges are read from."""

    async def fetchrow(self, query: str, *args: object) -> Any: ...


class Metrics:
    """Standard instruments of one service, registered in a registry of their own."""

    def __init__(self, service: str, registry: CollectorRegistry | None = None) -> None:
        self.service = service
        self.registry = registry if registry is not None else CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        # The service travels as an info metric rather than a label on every series:
        # Prometheus' target labels already tell instances apart.
        Info("service", "The service this process runs.", registry=self.registry).info(
            {"service": service}
        )
        self.events_published = Counter(
            "events_published_total",
            "Events published to Kafka.",
            ["topic"],
            registry=self.registry,
        )
        self.http_requests = Counter(
            "http_requests_total",
            "HTTP requests served, by route template.",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.http_request_seconds = Histogram(
            "http_request_seconds",
            "Time to serve HTTP requests, by route template.",
            ["route", "method"],
            registry=self.registry,
        )
        # Read from the service's own database at each scrape (refresh_outbox): the
        # relay process has no HTTP port, and a stuck relay shows here first.
        self.outbox_backlog = Gauge(
            "outbox_backlog",
            "Rows in the transactional outbox not yet published.",
            registry=self.registry,
        )
        self.outbox_oldest_seconds = Gauge(
            "outbox_oldest_seconds",
            "Age of the oldest outbox row not yet published (0 when none waits).",
            registry=self.registry,
        )
        self.outbox_rejected = Gauge(
            "outbox_rejected",
            "Outbox rows Kafka refused for good, set aside by the relay (an operator decides).",
            registry=self.registry,
        )

        # Read from Kafka at each scrape (shared.bus.lag): workers have no HTTP port, and
        # a dead worker's lag is exactly what must still show.
        self.consumer_lag = Gauge(
            "consumer_lag",
            "Records of a topic its consumer group has not yet committed.",
            ["group", "topic"],
            registry=self.registry,
        )
        self.consumer_group_members = Gauge(
            "consumer_group_members",
            "Consumers in the group now (0: no worker is consuming).",
            ["group"],
            registry=self.registry,
        )
        self.dead_letter_records = Gauge(
            "dead_letter_records",
            "Records held by a dead-letter topic of what this service consumes (all "
            "consumers' dead letters of that topic; the dlq_consumer header tells whose).",
            ["topic"],
            registry=self.registry,
        )
        # The DeadLetters alert reads this one: the count held falls when retention trims
        # old records, and increase() would take that fall for a reset (a false alert).
        self.dead_letters_written = Gauge(
            "dead_letters_written",
            "Records ever written to a dead-letter topic of what this service consumes "
            "(its end offsets summed): only grows, whatever retention removes.",
            ["topic"],
            registry=self.registry,
        )

    async def refresh_outbox(self, db: Fetches) -> None:
        """Set the outbox gauges from the service's database."""
        row = await db.fetchrow(
            "SELECT count(*) AS backlog,"
            " coalesce(extract(epoch FROM now() - min(created_at)), 0) AS oldest,"
            " (SELECT count(*) FROM bus_outbox_rejected) AS rejected"
            " FROM bus_outbox"
        )
        if row is not None:
            self.outbox_backlog.set(row["backlog"])
            self.outbox_oldest_seconds.set(float(row["oldest"]))
            self.outbox_rejected.set(row["rejected"])

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition payload and its content type (OpenMetrics if ``accept`` asks)."""
        if accept:
            encoder, content_type = choose_encoder(accept)
            return encoder(self.registry), content_type
        return generate_latest(self.registry), CONTENT_TYPE_LATEST


def route_template(scope: Scope) -> str:
    """The template of the route that served ``scope`` (``/users/{user_id}``), never its path."""
    route = scope.get("route")
    template = getattr(route, "path_format", None) or getattr(route, "path", None)
    # Inside a mounted sub-application the template is relative to the mount; the
    # mount's prefix is left out because ``root_path`` holds its values, not its template.
    return template if isinstance(template, str) else UNMATCHED_ROUTE


class MetricsMiddleware:
    """Pure ASGI middleware counting and timing HTTP requests by route template and status.

    The label is read after the app ran, from the route the router matched, because raw
    paths carry ids and emails and would also give every user a series of their own.
    Pure ASGI rather than ``BaseHTTPMiddleware``, which buffers streaming responses.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client gets if the app raises before responding
        started = time.perf_counter()

        async def send_and_record_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_record_status)
        finally:
            elapsed = time.perf_counter() - started
            method = str(scope.get("method", "")).upper()
            if method not in _KNOWN_METHODS:
                method = "OTHER"  # clients choose methods freely; labels must stay bounded
            route = route_template(scope)
            self.metrics.http_requests.labels(route, method, str(status)).inc()
            self.metrics.http_request_seconds.labels(route, method).observe(elapsed)
