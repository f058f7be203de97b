"""The dates a user is shown, and the GDPR / CCPA deadlines."""

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from services.deletion.domain import stages
from services.deletion.domain.schedule import (
    StageDate,
    add_months,
    ccpa_deadline,
    gdpr_deadline,
    overdue,
    stage_dates,
)
from shared.events.catalogue.deletion import DeletionStage
from tests.unit.deletion.factories import T0, TIMING, a_request, in_stage


def test_one_month_is_a_calendar_month_clamped_to_its_end() -> None:
    assert add_months(T0, 1) == datetime(2025, 2, 28, 12, 0, tzinfo=UTC)
    assert add_months(datetime(2025, 12, 15, tzinfo=UTC), 1) == datetime(2026, 1, 15, tzinfo=UTC)
    assert gdpr_deadline(T0) == datetime(2025, 2, 28, 12, 0, tzinfo=UTC)
    assert ccpa_deadline(T0) == T0 + timedelta(days=45)


def test_every_remaining_stage_has_a_date_from_configuration() -> None:
    request = in_stage("grace")
    shown = {d.stage: d for d in stage_dates(request, TIMING, T0, {"requested": T0, "grace": T0})}
    grace_end = T0 + TIMING.grace
    assert shown["requested"].done_at == T0
    assert shown["grace"].expected_by == grace_end
    assert shown["erasing"].expected_by == grace_end + TIMING.store_timeout
    assert shown["shredded"].expected_by == grace_end + TIMING.store_timeout
    assert (
        shown["complete"].expected_by == grace_end + TIMING.store_timeout + TIMING.backup_retention
    )


def test_known_backup_expiry_replaces_the_worst_case() -> None:
    request = in_stage("backups_pending")
    expiry = T0 + timedelta(days=20)
    shown = {d.stage: d for d in stage_dates(request, TIMING, T0, {}, backups_done_by=expiry)}
    assert shown["backups_pending"].expected_by == expiry
    assert shown["erasing"].expected_by is None  # done


def test_an_item_is_shown_without_the_shred_stage() -> None:
    shown = [d.stage for d in stage_dates(a_request("device"), TIMING, T0, {})]
    assert "shredded" not in shown
    assert shown[-1] == "complete"


def test_a_paused_request_shows_no_dates_past_the_hold() -> None:
    held = stages.place_hold(in_stage("grace"), T0)
    shown = {d.stage: d for d in stage_dates(held, TIMING, T0, {"requested": T0, "grace": T0})}
    assert shown["erasing"].expected_by is None
    assert shown["requested"].done_at is not None


def test_overdue_until_the_active_erasure_is_done() -> None:
    request = in_stage("erasing")
    assert overdue(request, T0 + timedelta(days=29)) == {"gdpr": True, "ccpa": False}
    assert overdue(request, T0 + timedelta(days=46)) == {"gdpr": True, "ccpa": True}
    erased = stages.stores_answered(request, T0 + timedelta(days=40))
    assert overdue(erased, T0 + timedelta(days=60)) == {"gdpr": False, "ccpa": False}


def _not_done_in_the_past(shown: list[StageDate], now: datetime) -> list[DeletionStage]:
    return [d.stage for d in shown if d.expected_by is not None and d.expected_by < now]


@pytest.mark.parametrize("paused_in", ["grace", "holds"])
def test_a_hold_lifted_after_the_grace_end_dates_what_remains_from_the_lift(
    paused_in: str,
) -> None:
    """Held on day 1 and lifted on day 60 of a 14-day grace: the request resumes where
    it paused (in holds: accounts yet to close the cancel window), and nothing left to
    do is shown as expected weeks ago."""
    request = in_stage(paused_in, window_closed=False)
    history: dict[DeletionStage, datetime] = {"requested": T0, "grace": T0}
    if paused_in == "holds":
        history["holds"] = request.grace_ends_at
    lifted_at = T0 + timedelta(days=60)
    held = stages.place_hold(request, T0 + timedelta(days=1))
    lifted = stages.lift_hold(held, lifted_at)
    shown = stage_dates(lifted, TIMING, lifted_at, history)
    assert _not_done_in_the_past(shown, lifted_at) == []
    by_stage = {d.stage: d for d in shown}
    assert by_stage["holds"].expected_by == lifted_at
    assert by_stage["erasing"].expected_by == lifted_at + TIMING.store_timeout
    assert by_stage["complete"].expected_by == (
        lifted_at + TIMING.store_timeout + TIMING.backup_retention
    )


def test_a_request_paused_on_arrival_shows_no_date_even_for_its_first_stage() -> None:
    held = stages.place_hold(a_request(), T0)
    later = T0 + timedelta(days=3)
    shown = stage_dates(held, TIMING, later, {"requested": T0, "paused": T0})
    assert [(d.done_at, d.expected_by) for d in shown] == [(None, None)] * len(shown)


@pytest.mark.parametrize("scope", ["account", "device"])
def test_a_request_the_verifier_escalated_shows_the_pass_a_retry_runs_and_keeps_it(
    scope: stages.Scope,
) -> None:
    """The verifier found the subject in a store after the erasure: what remains is the
    pass an operator's retry runs (erase again, wait out the backups), dated from now.
    Shown done while escalated, erasing and shredded turned not done at the retry."""
    request = in_stage("backups_pending", scope)
    assert request.erased_at is not None
    history: dict[DeletionStage, datetime] = {
        "requested": T0,
        "grace": T0,
        "holds": request.grace_ends_at,
        "erasing": request.grace_ends_at,
        "shredded": request.erased_at,
        "backups_pending": request.erased_at,
    }
    if scope != "account":
        del history["shredded"]
    now = request.erased_at + timedelta(days=40)
    escalated = stages.escalate(request, "verifier found: accounts.users.id", now)
    shown = {d.stage: d for d in stage_dates(escalated, TIMING, now, history, now)}
    remaining = [s for s in ("erasing", "shredded", "backups_pending", "complete") if s in shown]
    assert all(shown[s].done_at is None for s in remaining)
    assert shown["erasing"].expected_by == now + TIMING.store_timeout
    assert shown["complete"].expected_by == now + TIMING.store_timeout + TIMING.backup_retention

    # The operator retries a minute later (the handler clears erased_at): nothing shown
    # done before turns not done, and no date moves earlier.
    later = now + timedelta(minutes=1)
    retried = replace(stages.retry(escalated, later), erased_at=None)
    again = {d.stage: d for d in stage_dates(retried, TIMING, later, history, None)}
    for stage, before in shown.items():
        if before.done_at is not None:
            assert again[stage].done_at is not None, stage
        elif (by := before.expected_by) is not None and again[stage].done_at is None:
            after = again[stage].expected_by
            assert after is not None, stage
            assert after >= by, stage


def test_a_retried_erasure_is_dated_from_the_retry() -> None:
    erasing = in_stage("erasing")
    escalated_at = erasing.stage_entered_at + TIMING.store_timeout
    escalated = stages.escalate(erasing, "no answer in time from: analytics", escalated_at)
    retried_at = escalated_at + timedelta(days=10)
    retried = stages.retry(escalated, retried_at)
    shown = {d.stage: d for d in stage_dates(retried, TIMING, retried_at, {})}
    assert shown["erasing"].expected_by == retried_at + TIMING.store_timeout


def test_a_late_stage_is_due_now_never_in_the_past() -> None:
    """Stores past their deadline before the ticker escalated, or a snapshot expired
    and not yet verified: the stage is due now."""
    erasing = in_stage("erasing")
    late = erasing.stage_entered_at + TIMING.store_timeout + timedelta(minutes=1)
    shown = {d.stage: d for d in stage_dates(erasing, TIMING, late, {})}
    assert shown["erasing"].expected_by == late
    pending = in_stage("backups_pending")
    expired = T0 + timedelta(days=20)
    later = expired + timedelta(minutes=5)
    shown = {d.stage: d for d in stage_dates(pending, TIMING, later, {}, expired)}
    assert shown["backups_pending"].expected_by == later
