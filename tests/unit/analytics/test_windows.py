"""Visits fall into tumbling windows; load-time percentiles come from a histogram."""

import uuid
from datetime import UTC, datetime

from services.analytics.domain.windows import (
    LOAD_BUCKETS_MS,
    batch_deltas,
    cells_of,
    load_bucket,
    percentile,
    window_start,
)
from shared.events.catalogue.analytics import VisitRecorded

MOMENT = datetime(2026, 3, 14, 15, 9, 26, 535000, tzinfo=UTC)


def _visit(
    visitor: str = "a" * 32, page: str = "/", load: int | None = 120, salt: str | None = None
) -> VisitRecorded:
    return VisitRecorded(
        beacon_id=uuid.uuid4(),
        visitor_hash=visitor,
        salt_id=salt,
        site="imt.example",
        page=page,
        referrer_host=None,
        device_class="desktop",
        load_time_ms=load,
        occurred_at=MOMENT,
    )


def test_window_starts() -> None:
    assert window_start(MOMENT, "minute") == datetime(2026, 3, 14, 15, 9, tzinfo=UTC)
    assert window_start(MOMENT, "hour") == datetime(2026, 3, 14, 15, tzinfo=UTC)
    assert window_start(MOMENT, "day") == datetime(2026, 3, 14, tzinfo=UTC)


def test_a_visit_counts_in_twelve_cells_and_direct_visits_are_labelled() -> None:
    cells = cells_of(_visit())
    assert len(cells) == 12
    assert {(c.dimension, c.value) for c in cells} == {
        ("total", ""), ("page", "/"), ("referrer_host", "(direct)"), ("device_class", "desktop")
    }  # fmt: skip


def test_batch_deltas_count_visits_and_distinct_visitors() -> None:
    visits = [_visit("a" * 32), _visit("a" * 32), _visit("b" * 32, page="/x", load=None)]
    deltas = batch_deltas(visits)
    total_day = next(c for c in deltas.visits if c.grain == "day" and c.dimension == "total")
    assert deltas.visits[total_day] == 3
    assert len({h for c, h in deltas.visitors if c == total_day}) == 2
    assert sum(n for (c, _), n in deltas.load_buckets.items() if c == total_day) == 2
    assert len(deltas.windows) == 3


def test_percentiles_within_a_bucket_width() -> None:
    histogram: dict[int, int] = {}
    for ms in range(1, 101):  # 1..100 ms
        bucket = load_bucket(ms)
        histogram[bucket] = histogram.get(bucket, 0) + 1
    p50 = percentile(histogram, 0.5)
    assert p50 is not None
    assert 40 <= p50 <= 60
    assert percentile({}, 0.5) is None
    assert load_bucket(10**6) == len(LOAD_BUCKETS_MS) - 1


def test_each_window_of_a_batch_lists_the_salts_its_visitors_were_hashed_with() -> None:
    visits = [_visit(salt="0" * 16), _visit(salt="1" * 16), _visit(salt="0" * 16), _visit()]
    deltas = batch_deltas(visits)
    assert {grain for _, grain, _ in deltas.windows} == {"minute", "hour", "day"}
    assert all(salts == {"0" * 16, "1" * 16, ""} for salts in deltas.windows.values())
