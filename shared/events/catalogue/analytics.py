"""Anonymous visits and published trend windows."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, ClassVar, Literal
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, Field

from shared.events.registry import Event, register_event
from shared.events.topics import ANALYTICS_TRENDS, ANALYTICS_VISITS, Topic

DeviceClass = Literal["desktop", "mobile", "tablet", "app", "other"]
WindowGrain = Literal["minute", "hour", "day"]
Dimension = Literal["page", "referrer_host", "device_class"]
# C0 controls and DEL: PostgreSQL text cannot hold a NUL, and none belongs in a URL, a
# host or a screen name. (The collector refuses C1 controls too; records an older
# collector published with one are stored and counted, not dead-lettered.)
CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]")


def _printable(value: str) -> str:
    if CONTROL_CHARACTERS.search(value):
        raise ValueError("control characters are not allowed")  # never quotes the value
    return value


Printable = Annotated[str, AfterValidator(_printable)]


@register_event
class VisitRecorded(Event):
    """One scrubbed visit: no person, only a daily-salted visitor hash.

    Published by the collector with no key (visits are about nobody); ``beacon_id`` is
    the client's id of the beacon, by which the aggregator counts each visit once.
    ``salt_id`` names the salt, not a visitor: every visit one collector process
    hashes on a day carries the same one.

    Its texts hold no control character and ``occurred_at`` has a UTC offset: a record
    that could not be stored (PostgreSQL refuses a NUL; a time without an offset cannot
    be placed in a UTC window) is refused as it is read, and dead-lettered.
    """

    event_name: ClassVar[str] = "visit.recorded"
    version: ClassVar[int] = 1
    topic: ClassVar[Topic] = ANALYTICS_VISITS
    beacon_id: UUID
    visitor_hash: str = Field(pattern=r"^[0-9a-f]{32}$")
    salt_id: str | None = Field(
        None,
        pattern=r"^[0-9a-f]{16}$",
        description="Random id of the salt the hash was made with (one per collector "
        "process and day; never derived from the salt): how many salts a window's "
        "visitors were hashed with, so one network counted under each is not taken "
        "for several visitors. None: a collector from before it was sent.",
    )
    site: Printable = Field(max_length=253)
    page: Printable = Field(max_length=512)
    referrer_host: Printable | None = Field(None, max_length=253)
    device_class: DeviceClass
    load_time_ms: int | None = Field(None, ge=0, le=600_000)
    occurred_at: AwareDatetime


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
