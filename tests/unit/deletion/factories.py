"""Small factories for the deletion domain's tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from uuid import uuid4

from services.deletion.domain import stages
from services.deletion.domain.schedule import Timing

T0 = datetime(2025, 1, 31, 12, 0, tzinfo=UTC)
TIMING = Timing(
    grace=timedelta(days=14), store_timeout=timedelta(days=3), backup_retention=timedelta(days=35)
)


def a_request(
    scope: stages.Scope = "account", grace: timedelta = TIMING.grace
) -> stages.DeletionRequest:
    item = None if scope == "account" else uuid4()
    return stages.new_request(uuid4(), uuid4(), scope=scope, item_id=item, now=T0, grace=grace)


def in_stage(
    stage: str, scope: stages.Scope = "account", *, window_closed: bool = True
) -> stages.DeletionRequest:
    """A request walked along the happy path up to ``stage`` (past grace, with the cancel
    window closed by accounts unless ``window_closed`` is False)."""
    request = stages.start_grace(a_request(scope), T0)
    end = request.grace_ends_at
    if stage != "grace":
        request = stages.end_grace(request, end)
        if window_closed:
            request = stages.close_cancel_window(request, end)
    if stage not in ("grace", "holds"):
        request = stages.start_erasing(request, end)
    if stage in ("shredded", "backups_pending"):
        request = stages.stores_answered(request, end + timedelta(hours=1))
    if stage == "backups_pending" and request.stage == "shredded":
        request = stages.await_backups(request, request.stage_entered_at)
    assert request.stage == stage, f"no walk to {stage}"
    return request
