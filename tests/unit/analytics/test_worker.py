"""The aggregator never stalls on a visit it cannot store: refused as read, or dead-lettered."""

import random
import uuid
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest

from services.analytics import handlers, store, worker
from shared.bus import Delivery, Rejected, Tombstone, read_record
from shared.events import Envelope, encode_envelope, envelope_for
from shared.events.catalogue.analytics import VisitRecorded
from shared.events.topics import ANALYTICS_VISITS


def _visit(page: str = "/a", occurred_at: datetime | str | None = None) -> VisitRecorded:
    return VisitRecorded(
        beacon_id=uuid.uuid4(),
        visitor_hash="0" * 32,
        site="imt.example",
        page=page,
        device_class="desktop",
        occurred_at=occurred_at or datetime.now(UTC),
    )


def _record(**data: object) -> bytes:
    """A visit.recorded record as any producer could write it: valid but for ``data``."""
    valid = envelope_for(_visit(), source="t", subject=None)
    envelope = Envelope(type=valid.type, source="t", subject=None,
                        data={**valid.data, **data})  # fmt: skip
    return encode_envelope(envelope)


def test_a_valid_visit_is_delivered() -> None:
    assert isinstance(read_record(_record(), None, ANALYTICS_VISITS.name, 0, 0), Delivery)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        # Naive: cannot be placed in a UTC window (comparing it raised TypeError, retried).
        ({"occurred_at": "2026-01-01T10:00:00"}, "occurred_at"),
        # PostgreSQL text cannot hold a NUL (asyncpg raised DataError, retried).
        ({"page": "/a\u0000secret"}, "page"),
        ({"site": "imt.example\u0000"}, "site"),
        ({"referrer_host": "news\u001f.example"}, "referrer_host"),
        ({"page": "/a\u007f"}, "page"),
    ],
)
def test_a_visit_that_could_not_be_stored_is_refused_as_it_is_read(
    data: dict[str, object], field: str
) -> None:
    read = read_record(_record(**data), None, ANALYTICS_VISITS.name, 0, 0)
    assert isinstance(read, Rejected)  # the worker dead-letters it
    assert field in read.reason
    assert "secret" not in read.reason  # never quotes the value


class _Database:
    """Counts visits unless one of them is ``poison``: then the whole transaction fails
    with the error PostgreSQL gives for a NUL in text. ``outages`` fail first."""

    def __init__(self, poison: set[uuid.UUID], outages: int = 0) -> None:
        self.poison = poison
        self.outages = outages
        self.calls: list[list[uuid.UUID]] = []
        self.counted: list[uuid.UUID] = []

    async def count(self, visits: list[VisitRecorded]) -> None:
        ids = [v.beacon_id for v in visits]
        self.calls.append(ids)
        if self.outages:
            self.outages -= 1
            raise OSError("connection refused")
        if self.poison & set(ids):
            raise asyncpg.exceptions.CharacterNotInRepertoireError(
                'invalid byte sequence for encoding "UTF8": 0x00'
            )
        self.counted += ids


class _Letters:
    def __init__(self) -> None:
        self.sent: list[tuple[Any, str]] = []

    async def send(self, event: Any, reason: str) -> None:
        self.sent.append((event, reason))


@pytest.fixture(autouse=True)
def _no_waiting(monkeypatch: pytest.MonkeyPatch) -> None:
    # The retry delay is jittered by random.uniform: with no jitter, no wait.
    monkeypatch.setattr(random, "uniform", lambda low, high: 0.0)


async def test_a_batch_is_counted_in_one_transaction() -> None:
    visits = [_visit() for _ in range(3)]
    database, letters = _Database(set()), _Letters()
    await worker.count_batch([(f"event{i}", v) for i, v in enumerate(visits)],
                             database.count, letters.send)  # fmt: skip
    assert database.calls == [[v.beacon_id for v in visits]]
    assert letters.sent == []


async def test_a_visit_the_database_refuses_is_dead_lettered_and_the_others_counted() -> None:
    visits = [_visit() for _ in range(4)]
    bad = visits[2]
    database, letters = _Database({bad.beacon_id}), _Letters()
    batch = [(f"event{i}", v) for i, v in enumerate(visits)]
    await worker.count_batch(batch, database.count, letters.send)
    assert database.counted == [v.beacon_id for v in visits if v is not bad]
    assert letters.sent == [("event2", "cannot be stored: CharacterNotInRepertoireError (22021)")]
    # Once as a batch, then once per visit: a data error is not retried.
    assert len(database.calls) == 1 + len(visits)


async def test_an_outage_is_retried_not_dead_lettered() -> None:
    visits = [_visit() for _ in range(2)]
    database, letters = _Database(set(), outages=3), _Letters()
    await worker.count_batch([("e0", visits[0]), ("e1", visits[1])], database.count, letters.send)
    assert database.counted == [v.beacon_id for v in visits]
    assert len(database.calls) == 4  # three failures, then the batch at once
    assert letters.sent == []


async def test_an_outage_while_counting_one_at_a_time_is_retried_too() -> None:
    visits = [_visit() for _ in range(2)]
    database, letters = _Database({visits[0].beacon_id}), _Letters()
    real = database.count
    calls = 0

    async def flaky(batch: list[VisitRecorded]) -> None:
        nonlocal calls
        calls += 1
        if calls == 3:  # the second visit's first try: the database is away
            raise OSError("connection reset")
        await real(batch)

    await worker.count_batch([("e0", visits[0]), ("e1", visits[1])], flaky, letters.send)
    assert database.counted == [visits[1].beacon_id]
    assert [event for event, _ in letters.sent] == ["e0"]


def test_a_visit_an_older_collector_published_with_a_c1_control_is_still_read() -> None:
    """PostgreSQL stores a C1 control; only the collector refuses them now."""
    delivery = read_record(_record(page="/a\u0085"), None, ANALYTICS_VISITS.name, 0, 0)
    assert isinstance(delivery, Delivery), delivery


# Valid by the event's schema (it has a zone), but in UTC the year 10000: no window can
# hold it (placing it raised OverflowError, and the batch was retried for good).
END_OF_TIME = "9999-12-31T23:00:00-05:00"
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "occurred_at",
    [END_OF_TIME, NOW + timedelta(days=1), NOW + handlers.FUTURE_SKEW + timedelta(seconds=1)],
)
def test_a_visit_ahead_of_the_workers_clock_cannot_be_counted(occurred_at: object) -> None:
    reason = handlers.not_countable(_visit(occurred_at=occurred_at), NOW)  # type: ignore[arg-type]
    assert reason is not None
    assert "occurred_at is in the future" in reason


@pytest.mark.parametrize(
    "occurred_at",
    [
        NOW,
        NOW + timedelta(seconds=30),  # the collector's clock a little ahead: still counted
        NOW + handlers.FUTURE_SKEW,
        NOW - timedelta(days=30),  # late: ignored by aggregate, not dead-lettered
        datetime(1, 1, 1, tzinfo=UTC),
    ],
)
def test_a_visit_that_may_have_happened_is_countable(occurred_at: datetime) -> None:
    assert handlers.not_countable(_visit(occurred_at=occurred_at), NOW) is None


def _event(visit: VisitRecorded) -> SimpleNamespace:
    """A Faust stream event of ``visit``, as the worker reads it (its value decoded)."""
    raw = encode_envelope(envelope_for(visit, source="analytics", subject=None))
    return SimpleNamespace(value=read_record(raw, None, ANALYTICS_VISITS.name, 0, 0))


def test_a_batch_is_sorted_into_visits_to_count_and_records_to_dead_letter() -> None:
    now, ahead = _visit(occurred_at=NOW), _visit(occurred_at=NOW + timedelta(minutes=5))
    events = [
        _event(now),
        _event(_visit(occurred_at=END_OF_TIME)),
        SimpleNamespace(value=Rejected("page: a control character")),
        _event(ahead),
    ]
    visits, refused = worker.sort_out(events, NOW)
    assert visits == [(events[0], now), (events[3], ahead)]
    assert [event for event, _ in refused] == [events[1], events[2]]
    assert "occurred_at is in the future" in refused[0][1]
    assert refused[1][1] == "page: a control character"


def test_a_record_that_is_no_visit_is_dead_lettered_not_passed_over() -> None:
    """The codec gives a tombstone only where the topic takes them; still, the worker
    drops nothing it cannot count unseen."""
    events = [SimpleNamespace(value=Tombstone(b"k", "visits", 0, 0)), SimpleNamespace(value=None)]
    visits, refused = worker.sort_out(events, NOW)
    assert visits == []
    assert refused == [(events[0], "not a visit: Tombstone"), (events[1], "not a visit: NoneType")]


async def test_a_visit_whose_data_fails_the_counting_is_dead_lettered_and_the_others_counted() -> (
    None
):
    """Defence in depth: an error of one visit's data that no check foresaw is not retried
    for good (it would stop every partition): the batch is counted one at a time."""
    visits = [_visit() for _ in range(3)]
    bad = visits[1]
    counted: list[uuid.UUID] = []
    calls = 0

    async def count(batch: list[VisitRecorded]) -> None:
        nonlocal calls
        calls += 1
        if bad in batch:
            raise OverflowError("date value out of range")
        counted.extend(v.beacon_id for v in batch)

    letters = _Letters()
    await worker.count_batch([(f"e{i}", v) for i, v in enumerate(visits)], count, letters.send)
    assert counted == [visits[0].beacon_id, visits[2].beacon_id]
    assert letters.sent == [("e1", "cannot be counted: OverflowError")]
    assert calls == 1 + 3  # the batch, then each alone


@pytest.mark.parametrize(
    "error",
    [
        asyncpg.InsufficientPrivilegeError("permission denied for table trend_cells"),
        asyncpg.UndefinedTableError('relation "trend_cells" does not exist'),
        KeyError("a bug"),
    ],
    ids=lambda e: type(e).__name__,
)
async def test_an_error_no_visit_caused_is_retried_not_dead_lettered(
    error: Exception, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A grant revoked, a table missing mid-deploy, a bug: dead-lettered, every visit
    would be, and replayed only after the late-visit cutoff, never to be counted."""
    monkeypatch.setattr(worker, "_delay", lambda failures: 0.0)
    visits = [_visit() for _ in range(2)]
    counted: list[uuid.UUID] = []
    failures = 20  # however long it lasts

    async def count(batch: list[VisitRecorded]) -> None:
        nonlocal failures
        if failures:
            failures -= 1
            raise error
        counted.extend(v.beacon_id for v in batch)

    letters = _Letters()
    await worker.count_batch([("e0", visits[0]), ("e1", visits[1])], count, letters.send)
    assert counted == [v.beacon_id for v in visits]
    assert letters.sent == []


async def test_a_late_commit_is_counted_again_not_dead_lettered() -> None:
    visits = [_visit() for _ in range(2)]
    counted: list[uuid.UUID] = []
    late = 2

    async def count(batch: list[VisitRecorded]) -> None:
        nonlocal late
        if late:
            late -= 1
            raise handlers.LateCommit("a batch took over 0:10:00 to count")
        counted.extend(v.beacon_id for v in batch)

    letters = _Letters()
    await worker.count_batch([("e0", visits[0]), ("e1", visits[1])], count, letters.send)
    assert counted == [v.beacon_id for v in visits]
    assert letters.sent == []


class _Connection:
    """What aggregate asks of PostgreSQL: every beacon id new, no label stored yet."""

    async def fetch(self, sql: str, *args: Any) -> list[dict[str, Any]]:
        if "bus_processed_events" in sql:
            return [{"event_id": i} for i in args[1]]
        return []

    async def execute(self, *args: Any) -> str:
        return "SELECT 1"


async def test_a_visit_from_the_end_of_time_counted_by_aggregate_is_dead_lettered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The reviewer's case through the real aggregate, past the worker's check: it
    overflowed in the window arithmetic, and the batch was retried for good."""
    applied: list[int] = []

    async def apply_deltas(conn: object, deltas: Any) -> None:
        applied.append(sum(n for cell, n in deltas.visits.items()
                           if cell.grain == "day" and cell.dimension == "total"))  # fmt: skip

    monkeypatch.setattr(store, "apply_deltas", apply_deltas)
    visits = [_visit(), _visit(occurred_at=END_OF_TIME), _visit()]
    too_old = datetime.now(UTC) - timedelta(hours=47)

    async def count(batch: list[VisitRecorded]) -> None:
        await handlers.aggregate(_Connection(), batch, too_old, cap=100)  # type: ignore[arg-type]

    letters = _Letters()
    await worker.count_batch([(f"e{i}", v) for i, v in enumerate(visits)], count, letters.send)
    assert [event for event, _ in letters.sent] == ["e1"]
    assert "OverflowError" in letters.sent[0][1]
    assert applied == [1, 1]  # each good visit once, alone
