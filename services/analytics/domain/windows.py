"""Tumbling windows and the cells a visit counts in.

Every visit counts in three windows (its minute, hour and UTC day) and, in each, in
four cells: the total, its page, its referrer host ("(direct)" when none) and its
device class. Each dimension's cells therefore add up to the total.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal, NamedTuple

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


class CellKey(NamedTuple):
    """One cell of one window (a tuple: hashed and compared in C, which batches need)."""

    site: str
    grain: WindowGrain
    window_start: datetime
    dimension: CellDimension
    value: str

    @property
    def window(self) -> tuple[str, WindowGrain, datetime]:
        return (self.site, self.grain, self.window_start)


class Profile(NamedTuple):
    """What the visits of one minute that count in the same 12 cells share."""

    site: str
    minute: datetime
    hour: datetime
    day: datetime
    page: str
    referrer_host: str  # DIRECT when none
    device_class: str

    def cells(self) -> list[CellKey]:
        """The 12 cells a visit of this profile counts in."""
        values: tuple[tuple[CellDimension, str], ...] = (
            ("total", ""),
            ("page", self.page),
            ("referrer_host", self.referrer_host),
            ("device_class", self.device_class),
        )
        starts: tuple[tuple[WindowGrain, datetime], ...] = (
            ("minute", self.minute),
            ("hour", self.hour),
            ("day", self.day),
        )
        return [
            CellKey(self.site, grain, start, dimension, value)
            for grain, start in starts
            for dimension, value in values
        ]


Starts = Callable[[datetime], tuple[datetime, datetime, datetime]]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MINUTE = timedelta(minutes=1)


def _starts(moment: datetime) -> tuple[datetime, datetime, datetime]:
    return (
        window_start(moment, "minute"),
        window_start(moment, "hour"),
        window_start(moment, "day"),
    )


def profile_of(visit: VisitRecorded, starts: Starts = _starts) -> Profile:
    minute, hour, day = starts(visit.occurred_at)
    return Profile(visit.site, minute, hour, day, visit.page,
                   visit.referrer_host or DIRECT, visit.device_class)  # fmt: skip


def cells_of(visit: VisitRecorded) -> list[CellKey]:
    """The 12 cells a visit counts in."""
    return profile_of(visit).cells()


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
    """What a batch of new visits adds: visits per cell, visitor pairs, load buckets.

    Visitors are kept per profile (one pair per distinct visitor and profile, not per
    cell): the database expands each pair to the profile's 12 cells itself, so a batch
    sends about one visitor row per visit instead of twelve.
    """

    visits: dict[CellKey, int]
    profile_visitors: set[tuple[Profile, str]]
    load_buckets: dict[tuple[CellKey, int], int]
    windows: set[tuple[str, WindowGrain, datetime]]

    @property
    def visitors(self) -> set[tuple[CellKey, str]]:
        """The distinct (cell, visitor hash) pairs of the batch."""
        return {(cell, h) for profile, h in self.profile_visitors for cell in profile.cells()}


def batch_deltas(visits: Sequence[VisitRecorded]) -> BatchDeltas:
    """Group the visits by profile, then add each profile's counts to its 12 cells."""
    by_minute: dict[int, tuple[datetime, datetime, datetime]] = {}

    def starts(moment: datetime) -> tuple[datetime, datetime, datetime]:
        # Exact (timedelta arithmetic): the number of the UTC minute holding the moment.
        minute = (moment - _EPOCH) // _MINUTE
        cached = by_minute.get(minute)
        if cached is None:
            cached = by_minute[minute] = _starts(moment)
        return cached

    counts: dict[Profile, int] = {}
    bucket_counts: dict[tuple[Profile, int], int] = {}
    pairs: set[tuple[Profile, str]] = set()
    for visit in visits:
        profile = profile_of(visit, starts)
        counts[profile] = counts.get(profile, 0) + 1
        pairs.add((profile, visit.visitor_hash))
        if visit.load_time_ms is not None:
            key = (profile, load_bucket(visit.load_time_ms))
            bucket_counts[key] = bucket_counts.get(key, 0) + 1

    deltas = BatchDeltas({}, pairs, {}, set())
    cells_of_profile = {profile: profile.cells() for profile in counts}
    for profile, n in counts.items():
        for cell in cells_of_profile[profile]:
            deltas.visits[cell] = deltas.visits.get(cell, 0) + n
            deltas.windows.add(cell.window)
    for (profile, bucket), n in bucket_counts.items():
        for cell in cells_of_profile[profile]:
            cell_bucket = (cell, bucket)
            deltas.load_buckets[cell_bucket] = deltas.load_buckets.get(cell_bucket, 0) + n
    return deltas
