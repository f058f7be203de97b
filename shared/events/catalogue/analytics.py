"""Anonymous visits and published trend windows."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field

from shared.events.registry import Event, register_event
from shared.events.topics import ANALYTICS_TRENDS, ANALYTICS_VISITS, Topic

DeviceClass = Literal["desktop", "mobile", "tablet", "app", "other"]
WindowGrain = Literal["minute", "hour", "day"]
Dimension = Literal["page", "referrer_host", "device_class"]


@register_event
class VisitRecorded(Event):
    """One scrubbed visit: no person, only a daily-salted visitor hash.

    Published by the collector with no key (visits are about nobody); ``beacon_id`` is
    the client's id of the beacon, by which the aggregator counts each visit once.
    """

    event_name: ClassVar[str] = "visit.recorded"
    version: ClassVar[int] = 1
    topic: ClassVar[Topic] = ANALYTICS_VISITS
    beacon_id: UUID
    visitor_hash: str = Field(pattern=r"^[0-9a-f]{32}$")
    site: str = Field(max_length=253)
    page: str = Field(max_length=512)
    referrer_host: str | None = Field(None, max_length=253)
    device_class: DeviceClass
    load_time_ms: int | None = Field(None, ge=0, le=600_000)
    occurred_at: datetime


class TrendCell(BaseModel):
    """One cell of a window: a dimension's value and its counts (no visitor in it)."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    dimension: Dimension
    value: str
    visits: int = Field(ge=0)
    unique_visitors: int = Field(ge=0)
    load_time_p50_ms: float | None = None
    load_time_p95_ms: float | None = None


@register_event
class TrendWindowClosed(Event):
    """An aggregated window (counts only), keyed ``<site>|<window>|<window_start>``.

    Published when the window has closed (its end plus a grace period) and again, with
    a higher ``revision``, if late visits changed it: the compacted topic keeps the
    latest revision per key. Cells are raw (not k-suppressed): the topic is internal;
    published releases go through the trends APIs, which suppress small cells.
    """

    event_name: ClassVar[str] = "trend_window.closed"
    version: ClassVar[int] = 1
    topic: ClassVar[Topic] = ANALYTICS_TRENDS
    site: str
    window: WindowGrain
    window_start: datetime
    window_end: datetime
    revision: int = Field(ge=1)
    visits: int = Field(ge=0)
    unique_visitors: int = Field(ge=0)
    load_time_p50_ms: float | None = None
    load_time_p95_ms: float | None = None
    cells: tuple[TrendCell, ...] = ()


def trend_window_key(site: str, window: WindowGrain, window_start: datetime) -> str:
    """The deterministic Kafka key of a window on the compacted trends topic."""
    return f"{site}|{window}|{window_start.isoformat()}"
