"""Tumbling windows and the cells a visit counts in.

Every visit counts in three windows (its minute, hour and UTC day) and, in each, in
four cells: the total, its page, its referrer host ("(direct)" when none) and its
device class. Each dimension's cells therefore add up to the total.

A window holds at most a bounded number of labels per dimension (see
:func:`fold_labels`): the rest are folded into one OTHER cell, so the sums stay exact.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
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
# The one cell a window's labels beyond the cap are folded into. No label a visit can
# carry looks like it: pages are paths ("/…"), screens "screen:…", referrers host names,
# device classes one of five words.
OTHER = "(other)"

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
    def window(self) -> WindowKey:
        return (self.site, self.grain, self.window_start)


WindowKey = tuple[str, WindowGrain, datetime]


def _windows_of(
    site: str, minute: datetime, hour: datetime, day: datetime
) -> tuple[WindowKey, WindowKey, WindowKey]:
    return ((site, "minute", minute), (site, "hour", hour), (site, "day", day))


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
    # Each window the batch counts in, with the ids of the salts its visitors were
    # hashed with ("" for a visit sent without one).
    windows: dict[WindowKey, set[str]]

    @property
    def visitors(self) -> set[tuple[CellKey, str]]:
        """The distinct (cell, visitor hash) pairs of the batch."""
        return {(cell, h) for profile, h in self.profile_visitors for cell in profile.cells()}


# -- the cap on labels ----------------------------------------------------------------------
#
# Anyone may send beacons with any page or referrer, and suppressing a release costs
# more than linearly in the number of cells its windows hold (9,600 pages in a day took
# 17 s). So a window keeps at most ``cap`` labels of its own per dimension, and every
# later label is folded into the dimension's OTHER cell: its visits, visitors and load
# times are counted there, and every dimension still adds up to the total exactly.
#
# The decision is taken per UTC day, from what the store holds for the day window, and
# applies to the day's hours and minutes alike (a visit carries one label into all
# three grains, so a label has a cell in an hour or a minute only if it has one in its
# day). Each hour and minute then holds at most ``cap`` + 1 labels too, and a day and its
# hours, released together, fold the same labels: their sums still match, label by
# label, as the release's audit expects.
#
# The aggregation is at-least-once: a batch may be counted again (rolled back, retried,
# redelivered, in other batches), so the decision must not depend on which visits came
# together. It depends on the store only, and the store keeps both facts for good:
# - a label with a cell of its own in the day window keeps it (the cell stays);
# - once the day has an OTHER cell, it takes no new label of its own, however many
#   labels are left (an erasure can move some into "(erased)"): a label folded once is
#   folded for the rest of the day, so its visits never split between two cells.
# While the day has no OTHER cell and fewer than ``cap`` labels, new labels get cells of
# their own, the most visited of the batch first (then by label: the same batch over
# the same store folds the same labels). Concurrent workers take the day's lock first
# (handlers.aggregate), so none decides from a state another is changing.


class DayLabels(NamedTuple):
    """What the store holds of one (site, UTC day, dimension): the labels with a cell
    of their own in the day window, and whether any label was folded (OTHER exists)."""

    own: frozenset[str]
    folded: bool


LabelKey = tuple[str, datetime, CellDimension]  # (site, UTC day, dimension)
NO_LABELS = DayLabels(frozenset(), False)


def day_labels(
    cells: Iterable[tuple[str, datetime, CellDimension, str]],
) -> dict[LabelKey, DayLabels]:
    """The stored labels of day windows, from their cells (site, day, dimension, value)."""
    own: dict[LabelKey, set[str]] = {}
    folded: set[LabelKey] = set()
    for site, day, dimension, value in cells:
        if dimension == "total":
            continue
        key = (site, day, dimension)
        labels = own.setdefault(key, set())
        if value == OTHER:
            folded.add(key)
        else:
            labels.add(value)
    return {key: DayLabels(frozenset(labels), key in folded) for key, labels in own.items()}


def fold_labels(
    seen: Mapping[LabelKey, Mapping[str, int]], stored: Mapping[LabelKey, DayLabels], cap: int
) -> dict[LabelKey, frozenset[str]]:
    """The labels of a batch to fold into OTHER, per (site, day, dimension).

    ``seen``: the batch's labels with their visits; ``stored``: what the store holds of
    those days (:func:`day_labels`). See the comment above for the rule.
    """
    folded: dict[LabelKey, frozenset[str]] = {}
    for key, labels in seen.items():
        known = stored.get(key, NO_LABELS)
        new = [label for label in labels if label not in known.own and label != OTHER]
        if not new:
            continue
        room = 0 if known.folded else max(0, cap - len(known.own))
        if len(new) <= room:
            continue
        new.sort(key=lambda label: (-labels[label], label))
        folded[key] = frozenset(new[room:])
    return folded


def days_of(visits: Iterable[VisitRecorded]) -> set[tuple[str, datetime]]:
    """The (site, UTC day) of each visit: the day windows whose labels a batch needs."""
    return {(v.site, window_start(v.occurred_at, "day")) for v in visits}


def _fold(profile: Profile, folded: Mapping[LabelKey, frozenset[str]]) -> Profile:
    site, day = profile.site, profile.day
    page, referrer, device = profile.page, profile.referrer_host, profile.device_class
    if page in folded.get((site, day, "page"), ()):
        page = OTHER
    if referrer in folded.get((site, day, "referrer_host"), ()):
        referrer = OTHER
    if device in folded.get((site, day, "device_class"), ()):
        device = OTHER
    return profile._replace(page=page, referrer_host=referrer, device_class=device)


def _labels_seen(counts: Mapping[Profile, int]) -> dict[LabelKey, dict[str, int]]:
    seen: dict[LabelKey, dict[str, int]] = {}
    for profile, n in counts.items():
        labelled: tuple[tuple[CellDimension, str], ...] = (
            ("page", profile.page),
            ("referrer_host", profile.referrer_host),
            ("device_class", profile.device_class),
        )
        for dimension, label in labelled:
            labels = seen.setdefault((profile.site, profile.day, dimension), {})
            labels[label] = labels.get(label, 0) + n
    return seen


def batch_deltas(
    visits: Sequence[VisitRecorded],
    cap: int | None = None,
    stored: Mapping[LabelKey, DayLabels] | None = None,
) -> BatchDeltas:
    """Group the visits by profile, then add each profile's counts to its 12 cells.

    With a ``cap``, labels beyond it are folded into OTHER first (:func:`fold_labels`),
    given what the store holds of the visits' days (``stored``, every day of the batch:
    one it lacks is taken as holding no label yet).
    """
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
    salts: set[tuple[str, datetime, datetime, datetime, str]] = set()
    for visit in visits:
        profile = profile_of(visit, starts)
        counts[profile] = counts.get(profile, 0) + 1
        pairs.add((profile, visit.visitor_hash))
        salts.add((visit.site, profile.minute, profile.hour, profile.day, visit.salt_id or ""))
        if visit.load_time_ms is not None:
            key = (profile, load_bucket(visit.load_time_ms))
            bucket_counts[key] = bucket_counts.get(key, 0) + 1
    if cap is not None:
        folded = fold_labels(_labels_seen(counts), stored or {}, cap)
        if folded:
            counts, pairs, bucket_counts = _folded(counts, pairs, bucket_counts, folded)

    deltas = BatchDeltas({}, pairs, {}, {})
    cells_of_profile = {profile: profile.cells() for profile in counts}
    for profile, n in counts.items():
        for cell in cells_of_profile[profile]:
            deltas.visits[cell] = deltas.visits.get(cell, 0) + n
    for site, minute, hour, day, salt in salts:
        for window in _windows_of(site, minute, hour, day):
            deltas.windows.setdefault(window, set()).add(salt)
    for (profile, bucket), n in bucket_counts.items():
        for cell in cells_of_profile[profile]:
            cell_bucket = (cell, bucket)
            deltas.load_buckets[cell_bucket] = deltas.load_buckets.get(cell_bucket, 0) + n
    return deltas


def _folded(
    counts: dict[Profile, int],
    pairs: set[tuple[Profile, str]],
    bucket_counts: dict[tuple[Profile, int], int],
    folded: Mapping[LabelKey, frozenset[str]],
) -> tuple[dict[Profile, int], set[tuple[Profile, str]], dict[tuple[Profile, int], int]]:
    """The batch's profiles with the folded labels replaced by OTHER, merged: visits and
    load buckets are added up, and visitor pairs become one per distinct visitor."""
    into = {profile: _fold(profile, folded) for profile in counts}
    new_counts: dict[Profile, int] = {}
    for profile, n in counts.items():
        target = into[profile]
        new_counts[target] = new_counts.get(target, 0) + n
    new_buckets: dict[tuple[Profile, int], int] = {}
    for (profile, bucket), n in bucket_counts.items():
        key = (into[profile], bucket)
        new_buckets[key] = new_buckets.get(key, 0) + n
    return new_counts, {(into[p], h) for p, h in pairs}, new_buckets
