"""Anonymous visits and published trend windows."""

from __future__ import annotations

from datetime import datetime
from typing import ClassVar, Literal
from uuid import UUID

from pydantic import Field

from shared.events.registry import Event, register_event
from shared.events.topics import ANALYTICS_TRENDS, ANALYTICS_VISITS, Topic

DeviceClass = Literal["desktop", "mobile", "tablet", "app", "other"]


@register_event
class VisitRecorded(Event):
    """One scrubbed visit: no person, only a daily-salted visitor hash."""

    event_name: ClassVar[str] = "visit.recorded"
    version: ClassVar[int] = 1
    topic: ClassVar[Topic] = ANALYTICS_VISITS
    beacon_id: UUID
    visitor_hash: str = Field(pattern=r"^[0-9a-f]{32}$")
    site: str
    page: str = Field(max_length=512)
    referrer_host: str | None = None
    device_class: DeviceClass
    load_time_ms: int | None = Field(None, ge=0, le=600_000)
    occurred_at: datetime


@register_event
class TrendWindowClosed(Event):
    """An aggregated window (counts only), keyed by window and dimensions."""

    event_name: ClassVar[str] = "trend_window.closed"
    version: ClassVar[int] = 1
    topic: ClassVar[Topic] = ANALYTICS_TRENDS
    window: Literal["minute", "hour", "day"]
    window_start: datetime
    page: str
    visits: int = Field(ge=0)
    unique_visitors: int = Field(ge=0)
    load_time_p50_ms: float | None = None
    load_time_p95_ms: float | None = None
