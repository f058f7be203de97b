"""A window keeps a bounded number of labels per dimension; the rest are folded into one
"(other)" cell, so every sum stays exact. The collector counts iMT's own sites only."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import httpx
import pytest
from pydantic import ValidationError

from services.analytics import handlers, worker
from services.analytics.config import AnalyticsSettings, SiteList
from services.analytics.domain.windows import (
    OTHER,
    CellDimension,
    DayLabels,
    LabelKey,
    batch_deltas,
    day_labels,
    fold_labels,
    window_start,
)
from shared.events.catalogue.analytics import VisitRecorded
from tests.unit.analytics.test_collect import _collector_app, _Producer

MOMENT = datetime(2026, 3, 14, 15, 9, 26, tzinfo=UTC)
DAY = window_start(MOMENT, "day")
SITE = "imt.example"
PAGES: LabelKey = (SITE, DAY, "page")


def _visit(page: str, visitor: str = "a", referrer: str | None = None) -> VisitRecorded:
    return VisitRecorded(
        beacon_id=uuid.uuid4(),
        visitor_hash=visitor * 32,
        site=SITE,
        page=page,
        referrer_host=referrer,
        device_class="desktop",
        load_time_ms=120,
        occurred_at=MOMENT,
    )


# -- which labels are folded -----------------------------------------------------------


def test_new_labels_take_the_room_left_most_visited_first_then_by_label() -> None:
    seen = {PAGES: {"/a": 1, "/b": 5, "/c": 1, "/d": 2}}
    stored = {PAGES: DayLabels(frozenset({"/x"}), folded=False)}
    # Room for two more: /b (5 visits) and /d (2); /a and /c (1 each) are folded.
    assert fold_labels(seen, stored, cap=3) == {PAGES: frozenset({"/a", "/c"})}
    # The same batch over the same store folds the same labels, whatever its order.
    reordered = {PAGES: dict(reversed(seen[PAGES].items()))}
    assert fold_labels(reordered, stored, cap=3) == fold_labels(seen, stored, cap=3)


def test_a_label_with_a_cell_keeps_it_and_a_day_that_folded_takes_no_new_label() -> None:
    key = PAGES
    seen = {key: {"/own": 9, "/new": 9}}
    # Over the cap already (concurrent workers before the lock, a lower cap now): the
    # label with a cell of its own keeps it.
    full = {key: DayLabels(frozenset({"/own", "/x", "/y"}), folded=True)}
    assert fold_labels(seen, full, cap=2) == {key: frozenset({"/new"})}
    # Room left, but the day folded a label once: a new label is folded too (a label
    # folded once may come again; its visits must not split between two cells).
    room = {key: DayLabels(frozenset({"/own"}), folded=True)}
    assert fold_labels(seen, room, cap=200) == {key: frozenset({"/new"})}
    # Room left and nothing folded: nothing to fold.
    assert fold_labels(seen, {key: DayLabels(frozenset({"/own"}), False)}, cap=2) == {}


def test_the_stored_labels_of_a_day_are_read_from_its_cells() -> None:
    cells: list[tuple[str, datetime, CellDimension, str]] = [
        (SITE, DAY, "total", ""),
        (SITE, DAY, "page", "/a"),
        (SITE, DAY, "page", OTHER),
        (SITE, DAY, "referrer_host", "(direct)"),
    ]
    assert day_labels(cells) == {
        PAGES: DayLabels(frozenset({"/a"}), folded=True),
        (SITE, DAY, "referrer_host"): DayLabels(frozenset({"(direct)"}), folded=False),
    }


def test_folded_visits_count_in_other_in_every_grain_and_every_sum_stays_exact() -> None:
    visits = [_visit(f"/x/{i}", visitor="ab"[i % 2], referrer=f"r{i}.example") for i in range(10)]
    visits += [_visit("/x/0", visitor="c")]  # the most visited page
    deltas = batch_deltas(visits, cap=3)
    for grain in ("minute", "hour", "day"):
        for dimension in ("page", "referrer_host", "device_class"):
            cells = {c: n for c, n in deltas.visits.items()
                     if c.grain == grain and c.dimension == dimension}  # fmt: skip
            assert sum(cells.values()) == len(visits), (grain, dimension)
            assert len(cells) <= 3 + 1, (grain, dimension)
        pages = {c.value: n for c, n in deltas.visits.items()
                 if c.grain == grain and c.dimension == "page"}  # fmt: skip
        # /x/0 has two visits: first; then the others by label (/x/1, /x/2).
        assert pages == {"/x/0": 2, "/x/1": 1, "/x/2": 1, OTHER: 7}, grain
        # The (other) cell's visitors are those of the folded visits, counted once.
        others = {h for c, h in deltas.visitors if c.grain == grain and c.value == OTHER}
        assert others == {"a" * 32, "b" * 32}
        loads = sum(n for (c, _), n in deltas.load_buckets.items()
                    if c.grain == grain and c.dimension == "page" and c.value == OTHER)  # fmt: skip
        assert loads == 7


def test_without_a_cap_nothing_is_folded() -> None:
    visits = [_visit(f"/x/{i}") for i in range(500)]
    pages = {c.value for c in batch_deltas(visits).visits if c.dimension == "page"}
    assert len(pages) == 500


def test_the_cap_is_a_few_hundred_by_default() -> None:
    assert 100 <= AnalyticsSettings().analytics_max_labels_per_window <= 500


# -- the sites the collector counts ------------------------------------------------------


def test_the_sites_of_development_and_production() -> None:
    development = AnalyticsSettings().collected_sites
    # The tests' and benchmarks' sites, and the local stack's pages (location.hostname).
    for site in ("imt.example", "app.imt.example", "tabcdef.example", "benchxyz.example",
                 "localhost"):  # fmt: skip
        assert site in development, site
    for site in ("attacker.test", "example", "imt.example.evil.test", "xexample"):
        assert site not in development, site
    # (Not validated: production refuses the development secrets, beside the point here.)
    production = AnalyticsSettings.model_construct(environment="production").collected_sites
    accepted = [s for s in ("imt.example", "app.imt.example", "tabcdef.example", "localhost")
                if s in production]  # fmt: skip
    assert accepted == ["imt.example", "app.imt.example"]
    configured = AnalyticsSettings(analytics_sites=("Shop.Example.org.", "*.imt.org"))
    assert configured.collected_sites == SiteList(frozenset({"shop.example.org"}), (".imt.org",))
    assert "imt.org" not in configured.collected_sites  # *.name: the hosts under it only


def test_a_site_entry_must_be_a_host_name() -> None:
    for bad in ("http://imt.example", "imt.example:8080", "*", "*.", "a b.example"):
        with pytest.raises(ValueError, match="IMT_ANALYTICS_SITES"):
            AnalyticsSettings(analytics_sites=(bad,))


class _NoDatabase:
    """The count of a dropped visit fails (and is logged): beside the point here."""

    def acquire(self) -> None:
        raise OSError("no database in this test")


def _beacon(site: str, page: str = "/") -> dict[str, str]:
    return {"beacon_id": str(uuid.uuid4()), "site": site, "page": page}


HEADERS = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64; rv:130.0) Gecko/20100101 Firefox/130.0",
    "Content-Type": "application/json",
}


async def test_a_beacon_of_another_site_is_refused_with_a_problem_and_never_published() -> None:
    producer = _Producer()
    transport = httpx.ASGITransport(app=_collector_app(_NoDatabase(), producer))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        one = await client.post(
            "/beacon", content=json.dumps(_beacon("attacker.test")), headers=HEADERS
        )
        mixed = [_beacon(SITE), _beacon("shop.attacker.test"), _beacon(SITE)]
        batch = await client.post("/beacons", content=json.dumps(mixed), headers=HEADERS)
        ours = await client.post(
            "/beacons", content=json.dumps([_beacon(SITE), _beacon("tq.example")]),
            headers=HEADERS,
        )  # fmt: skip
        # A dropped visit is answered as a counted one, whatever its site (P-25).
        dropped = await client.post(
            "/beacon", content=json.dumps(_beacon("attacker.test")),
            headers={**HEADERS, "DNT": "1"},
        )  # fmt: skip
    assert one.status_code == 422, one.text
    assert one.headers["content-type"].startswith("application/problem+json")
    assert one.json()["detail"] == "the visits of this site are not counted."
    assert "attacker" not in one.text  # the problem repeats nothing of the request
    # A batch is refused whole, naming its first beacon of another site by index.
    assert batch.status_code == 422, batch.text
    assert batch.json()["detail"].startswith("beacon 1: ")
    assert "attacker" not in batch.text
    assert ours.status_code == 204, ours.text
    assert len(producer.sent) == 2  # only the accepted batch's views reached Kafka
    assert dropped.status_code == 204


# -- the worker never changes a day the API takes for final --------------------------------

# The worker's clock, a second before a UTC midnight: the day that ended 48 h before it
# is about to be final.
WORKER_NOW = datetime(2026, 3, 16, 23, 59, 59, tzinfo=UTC)
LATENESS = timedelta(hours=48)


class _Transaction:
    def __init__(self, pool: _Pool) -> None:
        self.pool = pool

    async def __aenter__(self) -> None:
        return None

    async def __aexit__(self, kind: object, *_: object) -> None:
        self.pool.outcomes.append("rolled back" if kind else "committed")


class _Pool:
    def __init__(self) -> None:
        self.outcomes: list[str] = []

    def acquire(self) -> _Pool:
        return self

    async def __aenter__(self) -> _Pool:
        return self

    async def __aexit__(self, *_: object) -> None:
        return None

    def transaction(self) -> _Transaction:
        return _Transaction(self)


class _WorkerClock(datetime):
    @classmethod
    def now(cls, tz: Any = None) -> Any:
        return WORKER_NOW


@pytest.mark.promise("P-20")
@pytest.mark.parametrize("api_ahead", [timedelta(seconds=5), timedelta(minutes=10),
                                       timedelta(minutes=30)])  # fmt: skip
async def test_a_visit_the_worker_counts_never_reaches_a_day_the_api_calls_final(
    monkeypatch: pytest.MonkeyPatch, api_ahead: timedelta
) -> None:
    """The batch commits a few seconds after its cutoff, and the API's clock may be
    ahead of the worker's: a released day must not change after its release."""
    cutoffs: list[datetime] = []

    async def aggregate(conn: object, visits: object, too_old: datetime, **_: object) -> int:
        cutoffs.append(too_old)
        return 0

    monkeypatch.setattr(worker, "datetime", _WorkerClock)
    monkeypatch.setattr(handlers, "aggregate", aggregate)
    pool = _Pool()
    settings = AnalyticsSettings(analytics_visitor_set_hours=48)
    await worker._count(cast(Any, pool), [], settings)
    [too_old] = cutoffs
    # The latest day any visit the worker took can be in is the day of its cutoff; the
    # API, committed to or not, takes the days before final_before for final.
    final = handlers.final_before(WORKER_NOW + api_ahead, LATENESS)
    assert final <= window_start(too_old, "day"), (too_old, final)
    assert pool.outcomes == ["committed"]


async def test_a_batch_that_took_too_long_is_rolled_back_to_be_counted_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async def aggregate(*_: object, **__: object) -> int:
        return 0

    monkeypatch.setattr(handlers, "aggregate", aggregate)
    monkeypatch.setattr(handlers, "COMMIT_DEADLINE", timedelta(seconds=-1))  # always late
    pool = _Pool()
    with pytest.raises(handlers.LateCommit):
        await worker._count(cast(Any, pool), [], AnalyticsSettings())
    assert pool.outcomes == ["rolled back"]
    # The margin covers the deadline with room for the clocks' skew.
    assert timedelta(minutes=30) <= handlers.FINALITY_MARGIN - handlers.COMMIT_DEADLINE


def test_a_lateness_shorter_than_the_finality_margin_is_refused() -> None:
    """With 1 hour, every visit would be too late to count: refused at start."""
    with pytest.raises(ValidationError, match="analytics_visitor_set_hours"):
        AnalyticsSettings(analytics_visitor_set_hours=1)
    assert AnalyticsSettings(analytics_visitor_set_hours=2).analytics_visitor_set_hours == 2
