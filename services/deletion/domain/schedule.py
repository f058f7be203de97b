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

from services.deletion.domain import stages
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
    """Latest expected completion of every stage of the path, from where the request is.

    What remains is counted from where the request stands now, not from a moment its
    plan had: a hold lifted, or accounts slow to close the cancel window, leaves the
    grace end in the past, and an escalated request moves on only from an operator's
    retry, which erases again and waits out the backups taken meanwhile.

    ``backups_done_by``: once erased, the expiry of the last snapshot holding the
    subject; before, that of the last snapshot taken so far, which may outlive those
    taken until the erasure (one kept longer than the usual retention).
    """
    if request.stage == "paused":  # nothing from the hold on has a date until it is lifted
        return dict.fromkeys(PATH, None)
    grace_end = max(request.grace_ends_at, now)
    erased_by_now = request.erased_at is not None and request.stage != "escalated"
    if request.stage == "escalated":
        # The retry waits out every backup taken before the stores erase again.
        erased = now + timing.store_timeout
    elif request.erased_at is not None:
        erased = request.erased_at
    elif request.stage == "erasing":
        # The stores' deadline of this pass: a retry starts a new one, past the first.
        erased = request.stage_entered_at + timing.store_timeout
    else:
        erased = grace_end + timing.store_timeout
    backups = erased + timing.backup_retention  # the snapshots taken until the erasure
    if erased_by_now:
        backups = backups_done_by or backups
    elif backups_done_by is not None:
        backups = max(backups, backups_done_by)
    return {
        "requested": now,  # left at the ticker's next look
        "grace": grace_end,
        "holds": grace_end,
        "erasing": erased,
        "shredded": erased,
        "backups_pending": backups,
        "complete": backups,
    }


def _position(request: DeletionRequest, path: tuple[DeletionStage, ...]) -> int:
    """Index of the stage the request waits to leave: every stage before it is done.

    An escalated request waits in ``erasing``, even one the verifier escalated after the
    erasure: it found the subject in a store, and an operator's retry erases again. Shown
    done until then, erasing and shredded would turn not done again at the retry."""
    current = request.waiting_in
    return path.index(current) if current in path else path.index("erasing")


def stage_dates(
    request: DeletionRequest,
    timing: Timing,
    now: datetime,
    history: dict[DeletionStage, datetime],
    backups_done_by: datetime | None = None,
) -> list[StageDate]:
    """Every stage of the request's path: done (with its date) or expected by a date.

    A stage not done is never expected in the past: one running late (the ticker has yet
    to act on it, a snapshot expired but not yet verified) is due now.
    """
    if request.stage == "cancelled":
        return [StageDate(s, t, None) for s, t in history.items()]
    expected = _expected(request, timing, now, backups_done_by)
    path = stages_shown(request)
    position = _position(request, path)
    shown = []
    for index, stage in enumerate(path):
        # A stage is done once the request has moved past it.
        if index < position or request.stage == "complete":
            shown.append(StageDate(stage, _done_at(path, index, history), None))
        else:
            by = expected[stage]
            shown.append(StageDate(stage, None, None if by is None else max(by, now)))
    return shown


def expected_by(
    request: DeletionRequest,
    timing: Timing,
    now: datetime,
    stage: DeletionStage,
    backups_done_by: datetime | None = None,
) -> datetime | None:
    """The date ``stage`` is expected by, exactly as :func:`stage_dates` shows it to the
    user (None: done already, on hold, or not on the request's path).

    The final email quotes it because the user can no longer sign in to see it: the
    date mailed must be the one the status showed.
    """
    shown = stage_dates(request, timing, now, {}, backups_done_by)
    return next((s.expected_by for s in shown if s.stage == stage), None)


def cancellable_until(request: DeletionRequest, now: datetime) -> datetime | None:
    """Until when the user can cancel, as far as this service knows; None once they cannot.

    Accounts takes a cancel until it closes the window, which it does only after this
    service announced ``holds``: so a whole account is cancellable while it waits in
    ``requested``, ``grace`` (paused there too), or ``holds`` until accounts' confirmation
    arrives: whenever :func:`stages.cancel` would take it. The grace end is when the window
    may close; once past (a hold lifted late, accounts yet to answer), it may close now.
    An item has no cancel window: accounts removed it at once.
    """
    if not request.whole_account:
        return None
    try:
        stages.cancel(request, now)
    except stages.StageConflict:
        return None
    return max(request.grace_ends_at, now)


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
