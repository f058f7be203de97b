"""What a user is shown of their request: while accounts still takes a cancel, the
answer says until when (a hold, or accounts yet to close the window, keeps it open)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest

from services.deletion import context, store
from services.deletion.domain import stages
from services.deletion.store import Tracked
from tests.unit.deletion.factories import T0, TIMING, a_request, in_stage
from tests.unit.deletion.fake_store import FakeStore


@pytest.fixture(autouse=True)
def _no_database(monkeypatch: pytest.MonkeyPatch) -> None:
    async def nothing(*_: object) -> Any:
        return None

    async def none_found(*_: object) -> list[Any]:
        return []

    monkeypatch.setattr(store, "history", none_found)
    monkeypatch.setattr(store, "snapshots_holding", none_found)
    monkeypatch.setattr(store, "certificate", nothing)


async def _shown(request: stages.DeletionRequest, now: datetime) -> dict[str, Any]:
    deps = FakeStore().deps(now, deletion_grace_seconds=TIMING.grace.total_seconds())
    ctx = context.Context(deps.settings, None, deps)  # type: ignore[arg-type]
    return await context.describe(None, ctx, Tracked(request, "user"))  # type: ignore[arg-type]


GRACE_END = T0 + TIMING.grace


def _paused(request: stages.DeletionRequest) -> stages.DeletionRequest:
    return stages.place_hold(request, T0 + timedelta(days=1))


# until: None when the grace end is past and accounts may close the window at any moment.
@pytest.mark.parametrize(
    ("request_", "now", "until"),
    [
        (in_stage("grace"), T0, GRACE_END),
        (_paused(in_stage("grace")), T0 + timedelta(days=2), GRACE_END),
        (_paused(in_stage("grace")), T0 + timedelta(days=60), T0 + timedelta(days=60)),
        (_paused(a_request()), T0 + timedelta(days=2), GRACE_END),
        (in_stage("holds", window_closed=False), GRACE_END + timedelta(minutes=1), None),
        (_paused(in_stage("holds", window_closed=False)), T0 + timedelta(days=20), None),
    ],
    ids=[
        "grace",
        "paused-in-grace",
        "paused-past-grace-end",
        "paused-on-arrival",
        "holds-window-open",
        "paused-in-holds-window-open",
    ],
)
async def test_a_request_accounts_still_takes_a_cancel_of_says_until_when(
    request_: stages.DeletionRequest, now: datetime, until: datetime | None
) -> None:
    shown = await _shown(request_, now)
    assert stages.cancel(request_, now).stage == "cancelled"  # this service takes it too
    assert shown["cancellable_until"] == (until or now).isoformat()


@pytest.mark.parametrize(
    "request_",
    [
        in_stage("holds"),
        _paused(in_stage("holds")),
        in_stage("erasing"),
        in_stage("grace", "device"),
    ],
    ids=["holds-window-closed", "paused-after-confirmation", "erasing", "an-item"],
)
async def test_a_request_past_its_cancel_window_shows_none(
    request_: stages.DeletionRequest,
) -> None:
    shown = await _shown(request_, GRACE_END + timedelta(days=1))
    assert shown["cancellable_until"] is None
