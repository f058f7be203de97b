"""The dates a user and the operators are shown, and the legal deadlines.

Each remaining stage gets the latest date it will be done by, from configuration: the
grace period, the time stores may take before escalation, and how long a backup is kept.
GDPR's one month and CCPA's 45 days bound the active erasure (``shredded`` for an
account, ``backups_pending`` for an item); backups may rotate out later.
"""

from __future__ import annotations

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta

from services.deletion.domain.stages import PATH, DeletionRequest
from shared.events.catalogue.deletion import DeletionStage

CCPA_DAYS = 45


@dataclass(frozen=True)
class Timing:
    grace: timedelta
    store_timeout: timedelta
    backup_retention: timedelta


@dataclass(frozen=True)
class StageDate:
    stage: DeletionStage
    done_at: datetime | None  # when it was done (past stages)
    expected_by: datetime | None  # latest expected date (remaining stages); None: on hold


def add_months(moment: datetime, months: int) -> datetime:
    """Same day ``months`` later, clamped to the month's end (GDPR counts calendar months)."""
    month = moment.month - 1 + months
    year, month = moment.year + month // 12, month % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def gdpr_deadline(requested_at: datetime) -> datetime:
    return add_months(requested_at, 1)


def ccpa_deadline(requested_at: datetime) -> datetime:
    return requested_at + timedelta(days=CCPA_DAYS)


def stages_shown(request: DeletionRequest) -> tuple[DeletionStage, ...]:
    """The path this request takes (an item skips ``shredded``)."""
    return PATH if request.whole_account else tuple(s for s in PATH if s != "shredded")


def _expected(
    request: DeletionRequest, timing: Timing, now: datetime, backups_done_by: datetime | None
) -> dict[DeletionStage, datetime | None]:
    """Latest expected completion of every stage of the path, from where the request is."""
    paused = request.stage == "paused"
    grace_end = max(request.grace_ends_at, now) if paused else request.grace_ends_at
    erasing_start = request.erasing_started_at or grace_end
    erased = request.erased_at or (erasing_start + timing.store_timeout)
    if request.erased_at is None and request.stage == "escalated":
        erased = now + timing.store_timeout  # after an operator's retry
    backups = backups_done_by or (erased + timing.backup_retention)
    dates: dict[DeletionStage, datetime | None] = {
        "requested": request.requested_at,
        "grace": grace_end,
        "holds": grace_end,
        "erasing": erased,
        "shredded": erased,
        "backups_pending": backups,
        "complete": backups,
    }
    if paused:  # nothing past the hold has a date until the hold is lifted
        return {s: None if s not in ("requested",) else d for s, d in dates.items()}
    return dates


def stage_dates(
    request: DeletionRequest,
    timing: Timing,
    now: datetime,
    history: dict[DeletionStage, datetime],
    backups_done_by: datetime | None = None,
) -> list[StageDate]:
    """Every stage of the request's path: done (with its date) or expected by a date."""
    if request.stage == "cancelled":
        return [StageDate(s, t, None) for s, t in history.items()]
    expected = _expected(request, timing, now, backups_done_by)
    path = stages_shown(request)
    current = request.waiting_in
    position = path.index(current) if current in path else path.index("erasing")
    shown = []
    for index, stage in enumerate(path):
        # A stage is done once the request has moved past it.
        done = index < position or request.stage == "complete"
        done_at = _done_at(path, index, history) if done else None
        shown.append(StageDate(stage, done_at, None if done else expected[stage]))
    return shown


def _done_at(
    path: tuple[DeletionStage, ...], index: int, history: dict[DeletionStage, datetime]
) -> datetime | None:
    """A stage is done when the next one was entered (complete: when it was entered)."""
    if path[index] == "complete":
        return history.get("complete")
    return history.get(path[index + 1]) if index + 1 < len(path) else None


def active_erasure_due(request: DeletionRequest) -> datetime:
    """The outer legal bound for the active erasure: the earlier of GDPR and CCPA."""
    return min(gdpr_deadline(request.requested_at), ccpa_deadline(request.requested_at))


def overdue(request: DeletionRequest, now: datetime) -> dict[str, bool]:
    """Whether the active erasure is late against each regime (not once it is done)."""
    if request.erased_at is not None or request.stage == "cancelled":
        return {"gdpr": False, "ccpa": False}
    return {
        "gdpr": now > gdpr_deadline(request.requested_at),
        "ccpa": now > ccpa_deadline(request.requested_at),
    }
