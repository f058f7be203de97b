"""One function per thing analytics does: collect a beacon, aggregate visits, publish
closed windows, release trends, answer an erase command."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from uuid import UUID

import asyncpg
from aiokafka import AIOKafkaProducer
from aiokafka.structs import RecordMetadata
from prometheus_client import Counter as CounterChild

from services.analytics import store
from services.analytics.domain.beacon import Beacon, ScrubMemo
from services.analytics.domain.release import Cell as ReleaseCell
from services.analytics.domain.release import NoiseSource, Release, Window, release
from services.analytics.domain.signals import Suppression
from services.analytics.domain.visitor import DailySalt, visitor_hash
from services.analytics.domain.windows import (
    batch_deltas,
    day_labels,
    days_of,
    window_end,
    window_start,
)
from shared.bus import Delivery, Tombstone, add_event, add_tombstones, mark_processed
from shared.db.pool import Connection
from shared.events import EnvelopeWriter
from shared.events.catalogue.analytics import (
    TrendCell,
    TrendWindowClosed,
    VisitRecorded,
    WindowGrain,
    trend_window_key,
)
from shared.events.catalogue.deletion import EraseSubject, SubjectErased
from shared.events.topics import ANALYTICS_TRENDS
from shared.observability import Metrics
from shared.tracing import traced

log = logging.getLogger(__name__)

SOURCE = "analytics"
AGGREGATOR = "analytics.aggregate"  # mark_processed name: dedupes by beacon id


# -- the collector ------------------------------------------------------------------------


@dataclass(frozen=True)
class Collector:
    """What the beacon endpoint needs, built once per API process."""

    producer: AIOKafkaProducer
    pool: asyncpg.Pool
    salt: DailySalt
    allowed_query_keys: frozenset[str]
    topic: str
    metrics: Metrics
    memo: ScrubMemo = field(init=False)
    published: CounterChild = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "memo", ScrubMemo(self.allowed_query_keys))
        object.__setattr__(self, "published", self.metrics.events_published.labels(self.topic))


# The longest a dropped visit waits for its count. A tracked one waits for Kafka only: a
# slow database must not keep a page waiting because it sent DNT or GPC.
SUPPRESSED_COUNT_SECONDS = 1.0
# What an unreachable, slow or failing database raises (the pool, the network, the server).
DATABASE_FAILURES: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
)


async def record_suppressed(collector: Collector, reason: Suppression, visits: int = 1) -> None:
    """The only trace of a dropped visit: a per-day count of its reason.

    Never fails: a dropped visit must be answered as a counted one is (the page cannot
    tell), so a count the database did not take is logged and lost (the Prometheus
    counter of dropped visits still has it).
    """
    try:
        async with asyncio.timeout(SUPPRESSED_COUNT_SECONDS), collector.pool.acquire() as conn:
            await store.count_suppressed(conn, datetime.now(UTC).date(), reason.value, visits)
    except DATABASE_FAILURES as exc:
        # The signal and the count only: nothing of the request.
        log.warning("%d visits dropped for %s not counted in the database (%s)",
                    visits, reason.value, type(exc).__name__)  # fmt: skip


async def collect(
    collector: Collector, beacons: Sequence[Beacon], client_address: str, user_agent: str
) -> list[VisitRecorded]:
    """Scrub beacons, hash their visitor, and publish them; returns once Kafka
    acknowledged every one (an error: some may be published, and a retry of the same
    beacons counts each once, by its id).

    ``send`` only queues a record: the producer batches the records of concurrent
    requests (linger), and each request still waits for its own acknowledgements.
    """
    now = datetime.now(UTC)
    visitor: dict[str, tuple[str, str]] = {}  # per site (hash, salt id): one client's batch
    events: list[VisitRecorded] = []
    acks: list[asyncio.Future[RecordMetadata]] = []
    partition = await _any_partition(collector.producer, collector.topic)
    writer = EnvelopeWriter(VisitRecorded, source=SOURCE, subject=None, time=now)
    try:
        for beacon in beacons:
            visit = collector.memo.scrub(beacon, user_agent)
            if visit.site not in visitor:
                salt = collector.salt.drawn()
                hashed = visitor_hash(salt.key, visit.site, client_address)
                visitor[visit.site] = (hashed, salt.id)
            hashed, salt_id = visitor[visit.site]
            event = VisitRecorded(
                beacon_id=visit.beacon_id,
                visitor_hash=hashed,
                salt_id=salt_id,
                site=visit.site,
                page=visit.page,
                referrer_host=visit.referrer_host,
                device_class=visit.device_class,
                load_time_ms=visit.load_time_ms,
                occurred_at=now,
            )
            value, headers = writer.encode(event)
            acks.append(
                await collector.producer.send(
                    collector.topic, value=value, key=None, partition=partition, headers=headers
                )
            )
            events.append(event)
    finally:
        # Every queued record is waited for, also when a later one could not be queued:
        # no acknowledgement, or error, is left for nobody to read.
        outcomes = await asyncio.gather(*acks, return_exceptions=True)
    failed = next((o for o in outcomes if isinstance(o, BaseException)), None)
    if failed is not None:
        raise failed
    collector.published.inc(len(events))
    return events


async def _any_partition(producer: AIOKafkaProducer, topic: str) -> int:
    """A partition chosen once for a request's visits: one with a leader, as the
    producer's own partitioner would (any, while the metadata knows of none).

    Visits have no key (order does not matter), so a request's visits may share one.
    Left to the producer, each record would be placed on its own, at ~40% of the cost
    of a send (it rebuilds the set of available partitions every time).
    """
    cluster = getattr(producer.client, "cluster", None)  # aiokafka's, not public API
    available = cluster.available_partitions_for_topic(topic) if cluster is not None else None
    if not available:
        available = await producer.partitions_for(topic)  # first use: fetches metadata
    return int(random.choice(tuple(available)))  # noqa: S311 - spreading load, not a secret


# -- when a day is final -------------------------------------------------------------------
#
# A day is final (released to partners and the public) once it ended ``lateness`` ago by
# the API's clock (:func:`final_before`). The worker must then never change it: a visit
# committed into a released day would show as a difference between two releases. The
# worker decides which visits are too late by its own clock before a batch's transaction,
# which commits later, and the API's clock is another machine's. So the worker stops
# taking a day's visits FINALITY_MARGIN before the API calls the day final
# (:func:`too_old_before`), and gives up a batch whose transaction ran longer than
# COMMIT_DEADLINE (:func:`check_commit_deadline`: it is counted again, with a new
# cutoff). A visit counted into a day therefore commits at least FINALITY_MARGIN -
# COMMIT_DEADLINE (50 min) before any API takes the day for final, whatever the clocks'
# skew up to that. The margin is on the worker's side, not the API's: the API's rule
# ("final once it ended ``lateness`` ago") stays the one documented and relied upon, and
# a visit is late only when the worker is that far behind (visits carry the collector's
# time), which an hour less of acceptance does not change in practice. It also keeps a
# visit from reaching a visitor set just as the clean-up deletes it (after ``lateness``).
FINALITY_MARGIN = timedelta(hours=1)
COMMIT_DEADLINE = timedelta(minutes=10)


class LateCommit(Exception):
    """A batch's transaction ran past COMMIT_DEADLINE: rolled back, to be counted again."""


def too_old_before(now: datetime, lateness: timedelta) -> datetime:
    """The worker's cutoff: a visit before it is too late to count (see above)."""
    return now - lateness + FINALITY_MARGIN


def check_commit_deadline(started: float) -> None:
    """Raise :class:`LateCommit` (in the transaction: rolling it back) if the batch's
    cutoff was taken more than COMMIT_DEADLINE ago (``started``: ``time.monotonic()``)."""
    if time.monotonic() - started > COMMIT_DEADLINE.total_seconds():
        raise LateCommit(f"a batch took over {COMMIT_DEADLINE} to count")


# -- a visit that cannot have happened -----------------------------------------------------
#
# A visit carries the collector's clock, and the rules above already take the clocks to
# agree within FINALITY_MARGIN - COMMIT_DEADLINE. A visit further ahead of the worker's
# clock than FUTURE_SKEW has not happened yet: a broken clock, or a record no collector
# wrote. Counted, it would sit in windows no retention reaches, or, near the year 9999,
# past what a UTC window can hold (the window arithmetic overflows, and a retry fails
# alike). So it is dead-lettered, and may be replayed should its time come. A visit a
# little ahead, as clocks kept by NTP are, counts as any other.
FUTURE_SKEW = timedelta(hours=1)
_IN_THE_FUTURE = (
    "occurred_at is in the future: more than"
    f" {FUTURE_SKEW // timedelta(minutes=1)} minutes ahead of the aggregator's clock"
)


def not_countable(visit: VisitRecorded, now: datetime) -> str | None:
    """Why the worker cannot count ``visit`` by its clock ``now`` (a dead letter's
    reason, without the visit's content), or None. Old visits are not refused here:
    late ones are expected, and ignored (``aggregate``)."""
    if visit.occurred_at > now + FUTURE_SKEW:
        return _IN_THE_FUTURE
    return None


# -- the aggregator -----------------------------------------------------------------------


async def aggregate(
    conn: Connection, visits: Sequence[VisitRecorded], too_old: datetime, *, cap: int
) -> int:
    """Count new visits in their windows; a beacon already counted is skipped.

    Runs inside the caller's transaction: the beacon ids are marked processed with the
    counts they add, so a redelivered beacon (worker crash, client retry) counts once.
    Each dimension of a day keeps at most ``cap`` labels, its hours and minutes with it;
    later ones are folded into "(other)" (see domain.windows: decided from what the
    store holds, under the day's lock, so redelivered or concurrent batches agree).
    """
    new_ids = await mark_processed(conn, AGGREGATOR, [v.beacon_id for v in visits])
    fresh: list[VisitRecorded] = []
    for visit in visits:
        if visit.beacon_id in new_ids and visit.occurred_at >= too_old:
            new_ids.discard(visit.beacon_id)
            fresh.append(visit)
    if fresh:
        days = days_of(fresh)
        await _lock_days(conn, days)
        stored = day_labels(await store.day_labels(conn, days))
        await store.apply_deltas(conn, batch_deltas(fresh, cap, stored))
    return len(fresh)


async def _lock_days(conn: Connection, days: set[tuple[str, datetime]]) -> None:
    """Serialise the workers counting visits of the same (site, day) until commit: each
    decides which labels to fold from what the others committed. Taken after the beacon
    ids are marked and before any cell is written, in one order: never a deadlock."""
    keys = sorted({_day_lock(site, day) for site, day in days})
    for key in keys:
        await conn.execute("SELECT pg_advisory_xact_lock($1)", key)


def _day_lock(site: str, day: datetime) -> int:
    digest = hashlib.blake2b(f"analytics.labels|{site}|{day.isoformat()}".encode(), digest_size=8)
    return int.from_bytes(digest.digest(), "big", signed=True)


async def forget_old(
    conn: Connection,
    visitor_set_age: timedelta,
    retention: dict[WindowGrain, timedelta],
    release_age: timedelta | None = None,
) -> dict[str, int]:
    """Retention (see :func:`store.forget_old`); a forgotten window that was published
    gets a tombstone, so compaction removes it from the trends topic too. Release
    receipts older than ``release_age`` go as well."""
    forgotten = await store.forget_old(conn, visitor_set_age, retention)
    keys = [trend_window_key(site, grain, start) for site, grain, start in forgotten.published]
    if keys:
        await add_tombstones(conn, ANALYTICS_TRENDS, keys)
    releases = 0 if release_age is None else await store.forget_releases(conn, release_age)
    return {**forgotten.removed, "tombstones": len(forgotten.published), "releases": releases}


async def publish_closed_windows(pool: asyncpg.Pool, grace: timedelta) -> int:
    """Queue TrendWindowClosed for every closed window changed since last published."""
    async with pool.acquire() as conn, conn.transaction():
        windows = await store.windows_to_publish(conn, grace)
        for w in windows:
            event = TrendWindowClosed(
                site=w.site,
                window=w.grain,
                window_start=w.window_start,
                window_end=w.window_end,
                revision=w.revision,
                visits=w.total.visits,
                unique_visitors=w.total.unique_visitors,
                load_time_p50_ms=w.total.load_time_p50_ms,
                load_time_p95_ms=w.total.load_time_p95_ms,
                cells=tuple(
                    TrendCell(
                        dimension=c.dimension,
                        value=c.value,
                        visits=c.visits,
                        unique_visitors=c.unique_visitors,
                        load_time_p50_ms=c.load_time_p50_ms,
                        load_time_p95_ms=c.load_time_p95_ms,
                    )
                    for c in w.cells
                ),
            )
            key = trend_window_key(w.site, w.grain, w.window_start)
            await add_event(conn, event, source=SOURCE, subject=key)
        await store.mark_published(conn, windows)
    return len(windows)


# -- releases -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ReleaseRequest:
    audience: str
    site: str
    grain: WindowGrain
    start: datetime
    end: datetime
    k: int
    epsilon: float | None
    final_before: datetime | None = None  # with a threshold: only days ended before


@dataclass(frozen=True)
class Receipt:
    release_id: UUID
    released_at: datetime
    end: datetime  # where the release stops: the end asked for, or where it was cut
    truncated: bool = False  # cut short of the end asked for (at most ``limit`` windows)


HOURS_A_DAY = 24
FAMILY = 1 + HOURS_A_DAY  # a day and its hours, released together


def final_before(now: datetime, lateness: timedelta) -> datetime:
    """Start of the first UTC day that may still change: a visit is counted up to
    ``lateness`` after it happened, so a day is final once it ended that long ago.

    By this process's clock: the worker stops counting a day's visits FINALITY_MARGIN
    before that, by its own (:func:`too_old_before`), and commits within COMMIT_DEADLINE,
    so no visit reaches a day this calls final (see "when a day is final" above)."""
    return window_start(now - lateness, "day")


async def release_trends(
    pool: asyncpg.Pool, request: ReleaseRequest, noise: NoiseSource, limit: int
) -> tuple[list[store.StoredWindow], Release, Receipt]:
    """Suppress (and noise) a site's windows and record the release's privacy receipt.

    With a threshold (k > 1), a release covers final days only (before
    ``request.final_before``), each with all its hours:
    - A day's counts are its hours' sums, so both grains are suppressed as one family,
      and either grain's answer for a window never depends on the range asked for.
    - Counts that can still change would give away their changes, and a change could
      move the complements: asked at two times, a released window would differ.
    It reads both grains in one snapshot, and considers at most ``limit`` windows, so
    covers ``limit // 25`` days. Minute windows have no threshold release.

    A range longer than that is cut, never silently: the receipt says where the release
    stops and that it was cut (asked again from there, the rest follows).
    """
    truncated = False
    async with pool.acquire() as conn, conn.transaction(isolation="repeatable_read"):
        if request.k <= 1:
            loaded = await store.read_windows(
                conn, request.site, request.grain, request.start, request.end, limit + 1
            )
            if len(loaded) > limit:
                # Operators see every window anyway: cut where the first left out starts.
                request = replace(request, end=loaded[limit].window_start)
                loaded, truncated = loaded[:limit], True
        else:
            request, truncated = within_days(request, max(1, limit // FAMILY))
            loaded = await _days_with_hours(conn, request, max(1, limit // FAMILY))
    if request.k <= 1:
        windows = [_window(w, None) for w in loaded]
        asked = list(range(len(loaded)))
    else:
        windows = [
            _window(w, None if w.grain == "day" else window_start(w.window_start, "day"),
                    per_salt=True)
            for w in loaded
        ]  # fmt: skip
        asked = [
            i for i, w in enumerate(loaded)
            if w.grain == request.grain and request.start <= w.window_start < request.end
        ][:limit]  # fmt: skip
    # Pure computation, up to a few hundred milliseconds: off the event loop.
    everything = await asyncio.to_thread(_suppressed, windows, request, noise)
    stored = [loaded[i] for i in asked]
    result = Release(request.k, request.epsilon, [everything.windows[i] for i in asked])
    release_id = uuid.uuid4()
    async with pool.acquire() as conn:
        released_at = await store.record_release(
            conn,
            release_id=release_id,
            audience=request.audience,
            site=request.site,
            grain=request.grain,
            start=request.start,
            end=request.end,
            k=request.k,
            epsilon=request.epsilon,
            windows=len(stored),
            cells_published=result.cells_published,
            cells_suppressed=result.cells_suppressed,
        )
    return stored, result, Receipt(release_id, released_at, request.end, truncated)


def within_days(request: ReleaseRequest, days: int) -> tuple[ReleaseRequest, bool]:
    """The request cut to the first ``days`` UTC days of its range, and whether it was.

    Cut by the range only, never by what is stored: where the first day left out starts
    would tell that someone came that day, though its windows may be hidden whole. Days
    from ``final_before`` on are left out anyway, so a range ending there is not cut.
    """
    try:
        last = window_start(request.start, "day") + timedelta(days=days)
    except OverflowError:  # the range starts at the end of time: nothing after it
        return request, False
    covered = request.end
    if request.final_before is not None:
        covered = min(covered, request.final_before)
    if last >= covered:
        return request, False
    return replace(request, end=last), True


def _suppressed(windows: list[Window], request: ReleaseRequest, noise: NoiseSource) -> Release:
    # The public's release hides all the partners' does without being told: every k is
    # settled from the ones below it (domain.release, "Releases under different k nest").
    return release(windows, request.k, request.epsilon, noise)


async def _days_with_hours(
    conn: Connection, request: ReleaseRequest, days: int
) -> list[store.StoredWindow]:
    """The day windows of the final days the range touches and every hour window of
    those days, the first ``days`` days of them (a day may exist only as hours; the
    range is cut to ``days`` days beforehand, see :func:`within_days`)."""
    start, end = request.start, request.end
    # Bounds at the ends of time stay as asked: there is no window beyond them.
    with contextlib.suppress(OverflowError):
        start = window_start(request.start, "day")
    with contextlib.suppress(OverflowError):
        end = window_end(window_start(request.end - timedelta(microseconds=1), "day"), "day")
    if request.final_before is not None:
        end = min(end, request.final_before)
    if start >= end:
        return []
    found = await store.read_windows(conn, request.site, "day", start, end, days)
    found += await store.read_windows(conn, request.site, "hour", start, end, days * HOURS_A_DAY)
    first = sorted({window_start(w.window_start, "day") for w in found})[:days]
    return [w for w in found if window_start(w.window_start, "day") in first]


def _window(w: store.StoredWindow, day: datetime | None, per_salt: bool = False) -> Window:
    """A stored window as a release sees it. ``per_salt``: its unique visitors counted as
    networks, at least: each salt the window's visitors were hashed with (a collector
    process's, each day) gives one network a hash of its own, so of s salts' distinct
    hashes at least 1/s are distinct networks. Thresholds and the sums' bounds hold for
    networks, then, whatever restarts or replicas the day saw (P-20)."""
    salts = w.salts if per_salt else 1
    return Window(
        f"{w.site}|{w.grain}|{w.window_start.isoformat()}",
        _cell(w.total, salts),
        [_cell(c, salts) for c in w.cells],
        None if day is None else f"{w.site}|day|{day.isoformat()}",
    )


def _cell(c: store.StoredCell, salts: int = 1) -> ReleaseCell:
    networks = -(-c.unique_visitors // salts)  # rounded up: one network, one hash per salt
    return ReleaseCell(
        c.dimension, c.value, c.visits, networks, c.load_time_p50_ms, c.load_time_p95_ms
    )


# -- erasure ------------------------------------------------------------------------------


async def erase(conn: Connection, items: Sequence[Delivery | Tombstone]) -> None:
    """Answer every EraseSubject: analytics keys nothing to a person, checked each time."""
    for item in traced(items):
        if not isinstance(item, Delivery) or not isinstance(item.event, EraseSubject):
            continue
        command = item.event
        erased = await store.erase_subject_traces(conn, command.subject_id)
        republished = erased.pop("republished_windows")  # not erased records: not counted
        if any(erased.values()):
            log.warning(
                "erasure found %d analytics cells naming a subject; %d published windows"
                " published again without them",
                erased["trend_cells"],
                republished,
            )
        receipt = SubjectErased(
            request_id=command.request_id,
            subject_id=command.subject_id,
            store=SOURCE,
            erased=erased,
            erased_at=datetime.now(UTC),
        )
        await add_event(conn, receipt, source=SOURCE, subject=str(command.subject_id))
