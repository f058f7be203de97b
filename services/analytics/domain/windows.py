"""Tumbling windows and the cells a visit counts in.

Every visit counts in three windows (its minute, hour and UTC day) and, in each, in
four cells: the total, its page, its referrer host ("(direct)" when none) and its
device class. Each dimension's cells therefore add up to the total.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from shared.events.catalogue.analytics import VisitRecorded, WindowGrain

GRAINS: tuple[WindowGrain, ...] = ("minute", "hour", "day")
GRAIN_LENGTH: dict[WindowGrain, timedelta] = {
    "minute": timedelta(minutes=1),
    "hour": timedelta(hours=1),
    "day": timedelta(days=1),
}
CellDimension = Literal["total", "page", "referrer_host", "device_class"]
DIMENSIONS: tuple[CellDimension, ...] = ("page", "referrer_host", "device_class")
DIRECT = "(direct)"

# Upper bounds (ms) of the load-time histogram buckets; the last bucket is open.
LOAD_BUCKETS_MS: tuple[int, ...] = (
    50, 100, 150, 200, 300, 400, 500, 750, 1000, 1500, 2000, 3000, 4000, 5000,
    7500, 10_000, 15_000, 20_000, 30_000, 60_000, 600_000,
)  # fmt: skip


def window_start(moment: datetime, grain: WindowGrain) -> datetime:
    """Start of the tumbling window of ``grain`` holding ``moment`` (UTC)."""
    moment = moment.astimezone(UTC)
    if grain == "minute":
        return moment.replace(second=0, microsecond=0)
    if grain == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


def window_end(start: datetime, grain: WindowGrain) -> datetime:
    return start + GRAIN_LENGTH[grain]


@dataclass(frozen=True, order=True)
class CellKey:
    site: str
    grain: WindowGrain
    window_start: datetime
    dimension: CellDimension
    value: str

    @property
    def window(self) -> tuple[str, WindowGrain, datetime]:
        return (self.site, self.grain, self.window_start)


def cells_of(visit: VisitRecorded) -> list[CellKey]:
    """The 12 cells a visit counts in."""
    values: tuple[tuple[CellDimension, str], ...] = (
        ("total", ""),
        ("page", visit.page),
        ("referrer_host", visit.referrer_host or DIRECT),
        ("device_class", visit.device_class),
    )
    return [
        CellKey(visit.site, grain, window_start(visit.occurred_at, grain), dimension, value)
        for grain in GRAINS
        for dimension, value in values
    ]


def load_bucket(load_time_ms: int) -> int:
    """Index of the histogram bucket of a load time."""
    return min(bisect.bisect_left(LOAD_BUCKETS_MS, load_time_ms), len(LOAD_BUCKETS_MS) - 1)


def percentile(histogram: Mapping[int, int], q: float) -> float | None:
    """The q-quantile (0 < q <= 1) of a load-time histogram, interpolated in its bucket.

    Exact to within the bucket's width (e.g. 50 ms below 200 ms, 250 ms around 1 s).
    """
    total = sum(histogram.values())
    if total == 0:
        return None
    rank = q * total
    seen = 0
    for bucket in sorted(histogram):
        count = histogram[bucket]
        if count and seen + count >= rank:
            low = 0 if bucket == 0 else LOAD_BUCKETS_MS[bucket - 1]
            high = LOAD_BUCKETS_MS[bucket]
            return round(low + (high - low) * (rank - seen) / count, 1)
        seen += count
    return float(LOAD_BUCKETS_MS[-1])


@dataclass
class BatchDeltas:
    """What a batch of new visits adds: visits per cell, visitor pairs, load buckets."""

    visits: dict[CellKey, int]
    visitors: set[tuple[CellKey, str]]
    load_buckets: dict[tuple[CellKey, int], int]
    windows: set[tuple[str, WindowGrain, datetime]]


def batch_deltas(visits: Sequence[VisitRecorded]) -> BatchDeltas:
    deltas = BatchDeltas({}, set(), {}, set())
    for visit in visits:
        bucket = None if visit.load_time_ms is None else load_bucket(visit.load_time_ms)
        for cell in cells_of(visit):
            deltas.visits[cell] = deltas.visits.get(cell, 0) + 1
            deltas.visitors.add((cell, visit.visitor_hash))
            deltas.windows.add(cell.window)
            if bucket is not None:
                key = (cell, bucket)
                deltas.load_buckets[key] = deltas.load_buckets.get(key, 0) + 1
    return deltas
