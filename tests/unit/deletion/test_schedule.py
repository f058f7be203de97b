"""The dates a user is shown, and the GDPR / CCPA deadlines."""

from datetime import UTC, datetime, timedelta

from services.deletion.domain import stages
from services.deletion.domain.schedule import (
    add_months,
    ccpa_deadline,
    gdpr_deadline,
    overdue,
    stage_dates,
)
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
