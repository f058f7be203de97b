"""The deletion service's SQL (its own database only)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime
from typing import Any
from uuid import UUID

import asyncpg

from services.deletion.domain.replay import LedgerEntry, ReleaseEntry
from services.deletion.domain.stages import DeletionRequest
from shared.bus import add_envelopes
from shared.db import Connection
from shared.events import Event, envelope_for

SOURCE = "deletion"


@dataclass(frozen=True)
class Tracked:
    """A request with the worker's bookkeeping around it."""

    request: DeletionRequest
    initiated_by: str
    expected_stores: tuple[str, ...] = ()
    retain_categories: tuple[str, ...] = ()
    erase_attempts: int = 0
    next_erase_at: datetime | None = None
    erase_deadline: datetime | None = None
    step_failures: int = 0  # failed attempts in a row at the due step (the ticker's)
    verify_due: bool = False  # set by the ticker's step; never stored
    trace_id: str | None = None  # of the work that asked for it (shared/tracing.py)

    def with_request(self, request: DeletionRequest) -> Tracked:
        return replace(self, request=request)


_INSERTED = (
    "request_id, subject_id, scope, item_id, initiated_by, stage, stage_entered_at,"
    " requested_at, grace_ends_at, paused_from, reason, erasing_started_at, erased_at,"
    " expected_stores, retain_categories, erase_attempts, next_erase_at, erase_deadline,"
    " cancel_window_closed_at, trace_id"
)
_COLUMNS = f"{_INSERTED}, step_failures"


def _tracked(row: asyncpg.Record) -> Tracked:
    request = DeletionRequest(
        row["request_id"],
        row["subject_id"],
        row["scope"],
        row["item_id"],
        row["stage"],
        row["requested_at"],
        row["grace_ends_at"],
        row["stage_entered_at"],
        row["paused_from"],
        row["reason"],
        row["erasing_started_at"],
        row["erased_at"],
        row["cancel_window_closed_at"],
    )
    return Tracked(
        request,
        row["initiated_by"],
        tuple(row["expected_stores"]),
        tuple(row["retain_categories"]),
        row["erase_attempts"],
        row["next_erase_at"],
        row["erase_deadline"],
        row["step_failures"],
        trace_id=row["trace_id"],
    )


async def insert_request(
    conn: Connection, tracked: Tracked, next_check_at: datetime | None
) -> bool:
    """Insert a new request; False if its id is already known (a redelivery)."""
    status = await conn.execute(
        f"INSERT INTO deletion_requests ({_INSERTED}, next_check_at)"  # noqa: S608 - constant
        " VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13,$14,$15,$16,$17,$18,$19,$20,$21)"
        " ON CONFLICT (request_id) DO NOTHING",
        *_values(tracked),
        next_check_at,
    )
    return bool(status == "INSERT 0 1")


def _values(t: Tracked) -> tuple[Any, ...]:
    r = t.request
    return (
        r.request_id,
        r.subject_id,
        r.scope,
        r.item_id,
        t.initiated_by,
        r.stage,
        r.stage_entered_at,
        r.requested_at,
        r.grace_ends_at,
        r.paused_from,
        r.reason,
        r.erasing_started_at,
        r.erased_at,
        list(t.expected_stores),
        list(t.retain_categories),
        t.erase_attempts,
        t.next_erase_at,
        t.erase_deadline,
        r.cancel_window_closed_at,
        t.trace_id,
    )


async def save(conn: Connection, tracked: Tracked, next_check_at: datetime | None) -> None:
    r = tracked.request
    await conn.execute(
        "UPDATE deletion_requests SET stage=$2, stage_entered_at=$3, paused_from=$4, reason=$5,"
        " erasing_started_at=$6, erased_at=$7, expected_stores=$8, retain_categories=$9,"
        " erase_attempts=$10, next_erase_at=$11, erase_deadline=$12, next_check_at=$13,"
        " cancel_window_closed_at=$14 WHERE request_id=$1",
        r.request_id,
        r.stage,
        r.stage_entered_at,
        r.paused_from,
        r.reason,
        r.erasing_started_at,
        r.erased_at,
        list(tracked.expected_stores),
        list(tracked.retain_categories),
        tracked.erase_attempts,
        tracked.next_erase_at,
        tracked.erase_deadline,
        next_check_at,
        r.cancel_window_closed_at,
    )


async def get(conn: Connection, request_id: UUID, *, lock: bool = False) -> Tracked | None:
    suffix = " FOR UPDATE" if lock else ""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM deletion_requests WHERE request_id = $1{suffix}",  # noqa: S608
        request_id,
    )
    return None if row is None else _tracked(row)


async def claim_due(conn: Connection, now: datetime, limit: int) -> list[Tracked]:
    """Due requests, locked for this transaction (other workers skip them)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM deletion_requests"  # noqa: S608 - constant
        " WHERE next_check_at <= $1 ORDER BY next_check_at LIMIT $2 FOR UPDATE SKIP LOCKED",
        now,
        limit,
    )
    return [_tracked(r) for r in rows]


async def set_next_check(conn: Connection, request_id: UUID, at: datetime | None) -> None:
    await conn.execute(
        "UPDATE deletion_requests SET next_check_at = $2 WHERE request_id = $1", request_id, at
    )


TICKER_CHANNEL = "deletion_due"


async def wake_ticker(conn: Connection) -> None:
    """Tell the workers' tickers, once this transaction commits, that a step is due now
    (they would otherwise find it at their next round)."""
    await conn.execute("SELECT pg_notify($1, '')", TICKER_CHANNEL)


async def close_cancel_window(conn: Connection, request_id: UUID, at: datetime) -> None:
    await conn.execute(
        "UPDATE deletion_requests SET cancel_window_closed_at = $2 WHERE request_id = $1",
        request_id,
        at,
    )


async def step_failed(
    conn: Connection, request_id: UUID, failures: int, next_check_at: datetime
) -> None:
    await conn.execute(
        "UPDATE deletion_requests SET step_failures = $2, next_check_at = $3 WHERE request_id = $1",
        request_id,
        failures,
        next_check_at,
    )


async def step_succeeded(conn: Connection, request_id: UUID) -> None:
    await conn.execute(
        "UPDATE deletion_requests SET step_failures = 0 WHERE request_id = $1", request_id
    )


async def of_subject(
    conn: Connection, subject_id: UUID, limit: int, before: UUID | None = None
) -> list[Tracked] | None:
    """The subject's requests, newest first, ``limit`` at most: from the start, or after
    the subject's request ``before`` (None when that is not one of theirs)."""
    after_time = None
    if before is not None:
        after_time = await conn.fetchval(
            "SELECT requested_at FROM deletion_requests WHERE request_id = $1 AND subject_id = $2",
            before,
            subject_id,
        )
        if after_time is None:
            return None
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM deletion_requests"  # noqa: S608 - constant
        " WHERE subject_id = $1 AND ($2::timestamptz IS NULL OR (requested_at, request_id)"
        " < ($2, $3)) ORDER BY requested_at DESC, request_id DESC LIMIT $4",
        subject_id,
        after_time,
        before,
        limit,
    )
    return [_tracked(r) for r in rows]


async def of_subject_in(conn: Connection, subject_id: UUID, stages: Sequence[str]) -> list[Tracked]:
    """The subject's requests in these stages, locked for this transaction."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM deletion_requests"  # noqa: S608 - constant
        " WHERE subject_id = $1 AND stage = ANY($2::text[]) ORDER BY request_id FOR UPDATE",
        subject_id,
        list(stages),
    )
    return [_tracked(r) for r in rows]


async def add_stage(conn: Connection, request: DeletionRequest, actor: UUID | None = None) -> None:
    await conn.execute(
        "INSERT INTO stage_history (request_id, stage, reason, actor, entered_at)"
        " VALUES ($1, $2, $3, $4, $5)",
        request.request_id,
        request.stage,
        request.reason,
        actor,
        request.stage_entered_at,
    )


async def history(conn: Connection, request_id: UUID) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT stage, reason, entered_at FROM stage_history WHERE request_id = $1 ORDER BY id",
            request_id,
        )
    )


async def publish(conn: Connection, event: Event, topic_suffix: str, subject: UUID) -> None:
    """Queue an event on its topic (or the scratch copy a test runs on) via the outbox."""
    envelope = envelope_for(event, source=SOURCE, subject=str(subject))
    await add_envelopes(conn, f"{event.topic.name}{topic_suffix}", [envelope])


# --- receipts ------------------------------------------------------------------------------


async def record_receipt(
    conn: Connection,
    erase_id: UUID,
    request_id: UUID,
    store: str,
    erased: dict[str, int],
    retained: dict[str, int],
    erased_at: datetime,
    retained_until: Mapping[str, date] | None = None,
) -> bool:
    status = await conn.execute(
        "INSERT INTO store_receipts"
        " (erase_id, store, request_id, erased, retained_anonymised, erased_at, retained_until)"
        " VALUES ($1, $2, $3, $4, $5, $6, $7)"
        " ON CONFLICT (erase_id, store) WHERE superseded_at IS NULL DO NOTHING",
        erase_id,
        store,
        request_id,
        erased,
        retained,
        erased_at,
        {category: day.isoformat() for category, day in (retained_until or {}).items()},
    )
    return bool(status == "INSERT 0 1")


async def answered_stores(conn: Connection, erase_id: UUID) -> set[str]:
    rows = await conn.fetch(
        "SELECT store FROM store_receipts WHERE erase_id = $1 AND superseded_at IS NULL",
        erase_id,
    )
    return {r["store"] for r in rows}


async def supersede_receipts(conn: Connection, erase_id: UUID, now: datetime) -> None:
    """Kept as proof of the earlier pass, but no longer an answer to this erasure id."""
    await conn.execute(
        "UPDATE store_receipts SET superseded_at = $2"
        " WHERE erase_id = $1 AND superseded_at IS NULL",
        erase_id,
        now,
    )


async def receipts(conn: Connection, request_id: UUID) -> list[asyncpg.Record]:
    """Every receipt recorded under the request: its erasure's (``erase_id`` is the
    request's own id) and its retention releases' (``release_category`` names the
    category released; null for the erasure's)."""
    return list(
        await conn.fetch(
            "SELECT s.erase_id, s.store, s.erased, s.retained_anonymised, s.erased_at,"
            " s.superseded_at, rr.category AS release_category"
            " FROM store_receipts s LEFT JOIN retention_releases rr ON rr.erase_id = s.erase_id"
            " WHERE s.request_id = $1 ORDER BY s.erased_at",
            request_id,
        )
    )


async def request_of_release(conn: Connection, erase_id: UUID) -> UUID | None:
    value = await conn.fetchval(
        "SELECT request_id FROM retention_releases WHERE erase_id = $1", erase_id
    )
    return value if isinstance(value, UUID) else None


# --- retention releases --------------------------------------------------------------------


async def kept_dates(
    conn: Connection, request_id: UUID
) -> list[tuple[str, dict[str, int], dict[str, date]]]:
    """Each store's current receipt of the request's erasure: (store, what it kept by
    table, the days it said its kept records of each category may go)."""
    rows = await conn.fetch(
        "SELECT store, retained_anonymised, retained_until FROM store_receipts"
        " WHERE erase_id = $1 AND superseded_at IS NULL",
        request_id,
    )
    return [
        (
            row["store"],
            row["retained_anonymised"],
            {c: date.fromisoformat(d) for c, d in row["retained_until"].items()},
        )
        for row in rows
    ]


async def plan_releases(
    conn: Connection, request_id: UUID, due: dict[str, tuple[UUID, datetime]]
) -> None:
    for category, (erase_id, due_at) in due.items():
        await conn.execute(
            "INSERT INTO retention_releases (erase_id, request_id, category, due_at, next_check_at)"
            " VALUES ($1, $2, $3, $4, $4) ON CONFLICT DO NOTHING",
            erase_id,
            request_id,
            category,
            due_at,
        )


@dataclass(frozen=True)
class Release:
    """A kept category's release: a second EraseSubject (``erase_id``), awaited like an
    erasure until every expected store answered it."""

    erase_id: UUID
    request_id: UUID
    category: str
    sent_at: datetime | None = None  # first sent
    expected_stores: tuple[str, ...] = ()
    send_attempts: int = 0
    next_send_at: datetime | None = None
    answer_deadline: datetime | None = None


_RELEASE_COLUMNS = (
    "erase_id, request_id, category, sent_at, expected_stores, send_attempts, next_send_at,"
    " answer_deadline"
)


def _release(row: asyncpg.Record) -> Release:
    return Release(
        row["erase_id"],
        row["request_id"],
        row["category"],
        row["sent_at"],
        tuple(row["expected_stores"]),
        row["send_attempts"],
        row["next_send_at"],
        row["answer_deadline"],
    )


async def claim_due_releases(conn: Connection, now: datetime, limit: int) -> list[Release]:
    """Releases due (to send, resend or escalate), locked; none of a subject under a legal
    hold, which waits for its release (claimed, they would come first at every tick and
    crowd out the others)."""
    rows = await conn.fetch(
        f"SELECT {_RELEASE_COLUMNS} FROM retention_releases rr"  # noqa: S608 - constant
        " WHERE rr.next_check_at <= $1 AND NOT EXISTS ("
        "   SELECT 1 FROM deletion_requests r JOIN legal_holds h USING (subject_id)"
        "   WHERE r.request_id = rr.request_id AND h.released_at IS NULL)"
        " ORDER BY rr.next_check_at LIMIT $2 FOR UPDATE OF rr SKIP LOCKED",
        now,
        limit,
    )
    return [_release(r) for r in rows]


async def save_release(conn: Connection, release: Release, next_check_at: datetime | None) -> None:
    await conn.execute(
        "UPDATE retention_releases SET sent_at = $2, expected_stores = $3, send_attempts = $4,"
        " next_send_at = $5, answer_deadline = $6, next_check_at = $7 WHERE erase_id = $1",
        release.erase_id,
        release.sent_at,
        list(release.expected_stores),
        release.send_attempts,
        release.next_send_at,
        release.answer_deadline,
        next_check_at,
    )


async def answer_release(conn: Connection, erase_id: UUID, now: datetime) -> bool:
    """Mark the release answered if every store it expected answered it (an escalated
    one too: its late receipts still count); False if one is missing, or it was already.

    Checked in one statement: two receipts recorded at once, each in its own
    transaction, may both find the other missing; the ticker's next look then finds both.
    """
    status = await conn.execute(
        "UPDATE retention_releases rr SET answered_at = $2, next_check_at = NULL"
        " WHERE rr.erase_id = $1 AND rr.sent_at IS NOT NULL AND rr.answered_at IS NULL"
        " AND rr.expected_stores <@ ARRAY("
        "   SELECT store FROM store_receipts WHERE erase_id = $1 AND superseded_at IS NULL)",
        erase_id,
        now,
    )
    return bool(status == "UPDATE 1")


async def escalate_release(conn: Connection, erase_id: UUID, reason: str, now: datetime) -> None:
    """An operator's now: no more resends; a late receipt or a retry takes it on."""
    await conn.execute(
        "UPDATE retention_releases SET escalated_at = $2, reason = $3, next_check_at = NULL"
        " WHERE erase_id = $1",
        erase_id,
        now,
        reason,
    )


# A release sent and unanswered starts over: resent at once, with a fresh timeout.
_RESTART = (
    "UPDATE retention_releases rr SET escalated_at = NULL, reason = NULL, send_attempts = 0,"
    " next_send_at = NULL, answer_deadline = NULL, next_check_at = $1"
    " WHERE rr.sent_at IS NOT NULL AND rr.answered_at IS NULL"
)


async def retry_escalated_releases(conn: Connection, request_id: UUID, now: datetime) -> int:
    """An operator's retry of the request's escalated releases; how many there were."""
    status = await conn.execute(
        f"{_RESTART} AND rr.request_id = $2 AND rr.escalated_at IS NOT NULL", now, request_id
    )
    return int(status.split()[-1])


async def restart_held_releases(conn: Connection, subject_id: UUID, now: datetime) -> None:
    """Releases of a subject whose hold was just released: not looked at while it was in
    force, their timeout ran on; each is resent now and given the whole timeout again."""
    await conn.execute(
        f"{_RESTART} AND rr.escalated_at IS NULL AND rr.request_id IN ("  # noqa: S608 - constant
        "   SELECT request_id FROM deletion_requests WHERE subject_id = $2)",
        now,
        subject_id,
    )


async def escalated_releases(conn: Connection, limit: int) -> list[asyncpg.Record]:
    """Releases escalated and still unanswered: kept records a store may still hold."""
    return list(
        await conn.fetch(
            "SELECT erase_id, request_id, category, reason, escalated_at FROM retention_releases"
            " WHERE escalated_at IS NOT NULL AND answered_at IS NULL"
            " ORDER BY escalated_at LIMIT $1",
            limit,
        )
    )


async def count_escalated_releases(conn: Connection) -> int:
    value = await conn.fetchval(
        "SELECT count(*) FROM retention_releases"
        " WHERE escalated_at IS NOT NULL AND answered_at IS NULL"
    )
    return int(value or 0)


async def pending_releases(conn: Connection, request_id: UUID) -> list[asyncpg.Record]:
    return list(
        await conn.fetch(
            "SELECT category, due_at, sent_at, answered_at, escalated_at, reason"
            " FROM retention_releases WHERE request_id = $1 ORDER BY due_at",
            request_id,
        )
    )


# --- backups -------------------------------------------------------------------------------


async def snapshots_holding(conn: Connection, erased_at: datetime) -> list[asyncpg.Record]:
    """Live snapshots taken before an erasure finished: they may still hold the subject."""
    return list(
        await conn.fetch(
            "SELECT snapshot_id, taken_at, expires_at FROM backup_snapshots"
            " WHERE expired_at IS NULL AND taken_at <= $1 ORDER BY expires_at",
            erased_at,
        )
    )


async def ledger(conn: Connection) -> list[LedgerEntry]:
    rows = await conn.fetch(
        "SELECT request_id, subject_id, scope, item_id, erasing_started_at, erased_at"
        " FROM deletion_requests WHERE erasing_started_at IS NOT NULL"
    )
    return [
        LedgerEntry(
            r["request_id"],
            r["subject_id"],
            r["scope"],
            r["item_id"],
            r["erasing_started_at"],
            r["erased_at"],
        )
        for r in rows
    ]


async def released(conn: Connection) -> list[ReleaseEntry]:
    """Retention releases sent (a release is of an account: its subject's kept rows)."""
    rows = await conn.fetch(
        "SELECT r.subject_id, rr.category, rr.answered_at FROM retention_releases rr"
        " JOIN deletion_requests r USING (request_id) WHERE rr.sent_at IS NOT NULL"
    )
    return [ReleaseEntry(r["subject_id"], r["category"], r["answered_at"]) for r in rows]


# --- certificates --------------------------------------------------------------------------


async def save_certificate(
    conn: Connection, request_id: UUID, issued_at: datetime, body: dict[str, Any], digest: str
) -> None:
    await conn.execute(
        "INSERT INTO certificates (request_id, issued_at, body, digest) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (request_id) DO NOTHING",
        request_id,
        issued_at,
        body,
        digest,
    )


async def certificate(conn: Connection, request_id: UUID) -> asyncpg.Record | None:
    return await conn.fetchrow(
        "SELECT body, digest FROM certificates WHERE request_id = $1", request_id
    )


# --- operators -----------------------------------------------------------------------------


async def stage_counts(conn: Connection) -> dict[str, int]:
    rows = await conn.fetch("SELECT stage, count(*) AS n FROM deletion_requests GROUP BY stage")
    return {r["stage"]: r["n"] for r in rows}


async def escalated_requests(conn: Connection, limit: int) -> list[Tracked]:
    """Requests waiting for an operator, longest-waiting first."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM deletion_requests"  # noqa: S608 - constant
        " WHERE stage = 'escalated' ORDER BY stage_entered_at LIMIT $1",
        limit,
    )
    return [_tracked(r) for r in rows]


async def open_requests_before(conn: Connection, requested_before: datetime) -> list[Tracked]:
    """Open requests made before a moment (the ones old enough to be late)."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM deletion_requests"  # noqa: S608 - constant
        " WHERE stage NOT IN ('complete', 'cancelled') AND requested_at < $1 ORDER BY requested_at",
        requested_before,
    )
    return [_tracked(r) for r in rows]


async def open_stages(conn: Connection, final: Sequence[str]) -> dict[str, tuple[int, float]]:
    """Stage -> (requests in it, seconds the longest-waiting one has been there)."""
    rows = await conn.fetch(
        "SELECT stage, count(*) AS n,"
        " extract(epoch FROM now() - min(stage_entered_at)) AS oldest"
        " FROM deletion_requests WHERE stage <> ALL($1::text[]) GROUP BY stage",
        list(final),
    )
    return {r["stage"]: (r["n"], max(0.0, float(r["oldest"]))) for r in rows}
