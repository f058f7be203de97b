"""The stage machine: every transition, and the ones that must be refused."""

from datetime import timedelta

import pytest

from services.deletion.domain import stages
from tests.unit.deletion.factories import T0, a_request, in_stage


def test_a_new_request_is_requested_with_its_grace_end() -> None:
    request = a_request()
    assert request.stage == "requested"
    assert request.grace_ends_at == T0 + timedelta(days=14)


def test_an_item_has_no_grace_period_its_account_has() -> None:
    # Accounts removed the item at once: its erasure everywhere else starts now.
    for scope in ("device", "request"):
        assert a_request(scope, grace=timedelta(days=14)).grace_ends_at == T0
    assert a_request("account", grace=timedelta(days=14)).grace_ends_at == T0 + timedelta(days=14)


def test_an_item_deletion_names_its_item() -> None:
    with pytest.raises(ValueError, match="names the item"):
        stages.new_request(
            a_request().request_id, a_request().subject_id, scope="device", item_id=None,
            now=T0, grace=timedelta(0),
        )  # fmt: skip


def test_the_happy_path_of_an_account() -> None:
    request = in_stage("grace")
    with pytest.raises(stages.StageConflict, match="not ended"):
        stages.end_grace(request, request.grace_ends_at - timedelta(seconds=1))
    holds = stages.end_grace(request, request.grace_ends_at)
    holds = stages.close_cancel_window(holds, holds.stage_entered_at)
    erasing = stages.start_erasing(holds, holds.stage_entered_at)
    assert erasing.erasing_started_at == holds.stage_entered_at
    shredded = stages.stores_answered(erasing, erasing.stage_entered_at + timedelta(minutes=5))
    assert (shredded.stage, shredded.erased_at) == ("shredded", shredded.stage_entered_at)
    pending = stages.await_backups(shredded, shredded.stage_entered_at)
    done = stages.verified(pending, pending.stage_entered_at + timedelta(days=35))
    assert done.stage == "complete"


def test_an_item_skips_shredding_the_subject_key() -> None:
    erasing = in_stage("erasing", scope="device")
    assert stages.stores_answered(erasing, T0 + timedelta(days=15)).stage == "backups_pending"


@pytest.mark.parametrize("stage", ["requested", "grace"])
def test_cancel_in_grace(stage: str) -> None:
    cancelled = stages.cancel(in_stage(stage) if stage != "requested" else a_request(), T0)
    assert cancelled.stage == "cancelled"
    assert cancelled.erasing_started_at is None


@pytest.mark.parametrize("stage", ["holds", "erasing", "shredded", "backups_pending"])
def test_no_cancel_once_past_grace(stage: str) -> None:
    with pytest.raises(stages.StageConflict, match="can no longer be cancelled"):
        stages.cancel(in_stage(stage), T0)


def test_holds_takes_a_cancel_until_accounts_closes_the_window() -> None:
    waiting = in_stage("holds", window_closed=False)
    assert waiting.awaits_cancel_window
    assert stages.cancel(waiting, T0).stage == "cancelled"
    with pytest.raises(stages.StageConflict, match="cancel window"):
        stages.start_erasing(waiting, T0)
    closed = stages.close_cancel_window(waiting, T0 + timedelta(seconds=1))
    assert closed.cancel_window_closed_at == T0 + timedelta(seconds=1)
    assert stages.close_cancel_window(closed, T0 + timedelta(days=1)) == closed  # idempotent
    with pytest.raises(stages.StageConflict, match="can no longer be cancelled"):
        stages.cancel(closed, T0)
    assert stages.start_erasing(closed, T0).stage == "erasing"


def test_a_request_paused_in_holds_keeps_its_window() -> None:
    held = stages.place_hold(in_stage("holds", window_closed=False), T0)
    closed = stages.close_cancel_window(held, T0)
    assert (closed.stage, closed.cancel_window_closed_at) == ("paused", T0)
    with pytest.raises(stages.StageConflict):
        stages.cancel(closed, T0)
    assert stages.cancel(held, T0).stage == "cancelled"


@pytest.mark.parametrize("stage", ["requested", "grace"])
def test_the_window_closes_only_after_grace(stage: str) -> None:
    request = in_stage(stage) if stage != "requested" else a_request()
    with pytest.raises(stages.StageConflict, match="open cancel window"):
        stages.close_cancel_window(request, T0)


def test_an_item_has_no_cancel_window() -> None:
    holds = in_stage("holds", scope="device", window_closed=False)
    assert not holds.awaits_cancel_window
    assert stages.start_erasing(holds, T0).stage == "erasing"
    assert stages.close_cancel_window(holds, T0) == holds


def test_a_legal_hold_pauses_with_its_code_and_lifting_resumes() -> None:
    # The hold's own reason is an operator's free text: it stays in legal_holds.
    grace = in_stage("grace")
    held = stages.place_hold(grace, T0 + timedelta(days=1))
    assert (held.stage, held.reason, held.paused_from) == ("paused", "legal_hold", "grace")
    resumed = stages.lift_hold(held, T0 + timedelta(days=20))
    assert (resumed.stage, resumed.paused_from, resumed.reason) == ("grace", None, None)


def test_a_held_request_in_grace_can_still_be_cancelled() -> None:
    held = stages.place_hold(in_stage("grace"), T0)
    assert stages.cancel(held, T0).stage == "cancelled"


def test_a_hold_pauses_only_what_is_not_erased_yet() -> None:
    assert stages.place_hold(in_stage("grace"), T0).stage == "paused"
    for erased in ("erasing", "backups_pending"):  # it holds what is kept, not the request
        request = in_stage(erased)
        assert stages.place_hold(request, T0) is request
    with pytest.raises(stages.StageConflict):
        stages.place_hold(stages.cancel(in_stage("grace"), T0), T0)


def test_a_hold_restated_through_a_paused_request_leaves_it_as_it_is() -> None:
    # Paused by the hold in force: the restatement is recorded beside the hold, and the
    # request waits on, paused from where it was.
    paused = stages.place_hold(in_stage("grace"), T0)
    assert stages.place_hold(paused, T0 + timedelta(days=1)) is paused


def test_escalation_and_retry() -> None:
    escalated = stages.escalate(in_stage("erasing"), "no answer from: analytics", T0)
    assert escalated.reason == "no answer from: analytics"
    assert stages.retry(escalated, T0).stage == "erasing"
    # Late receipts complete an escalated request without an operator.
    assert stages.stores_answered(escalated, T0).stage == "shredded"


def test_verification_needs_an_erasure() -> None:
    with pytest.raises(stages.StageConflict):
        stages.verified(in_stage("grace"), T0)


def test_missing_stores_and_back_off() -> None:
    assert stages.missing_stores(("accounts", "notifier", "analytics"), {"notifier"}) == (
        "accounts",
        "analytics",
    )
    delays = [stages.resend_delay(n, 60, 600).total_seconds() for n in range(1, 6)]
    assert delays == [60, 120, 240, 480, 600]


@pytest.mark.parametrize("attempt", [1025, 5000, 10**9])
def test_the_back_off_stays_at_its_cap_however_many_failures_came_before(attempt: int) -> None:
    # 2 ** 1024 is past any float: a step failing for ever must not turn into an error.
    assert stages.resend_delay(attempt, 60, 21600) == timedelta(seconds=21600)
    assert stages.resend_delay(attempt, 0.5, 60) == timedelta(seconds=60)
