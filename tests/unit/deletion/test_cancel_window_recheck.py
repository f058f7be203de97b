"""A whole account waiting in ``holds`` for accounts' confirmation is never forgotten.

If accounts dead-lettered the ``holds`` announcement, no DeletionConfirmed would ever
come: the request is announced again with back-off, then escalated at the store
timeout, and an escalation in ``holds`` never lets a store erase before accounts
confirms.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.deletion import handlers
from services.deletion.domain import stages
from services.deletion.store import Tracked
from shared.events.catalogue.accounts import DeletionConfirmed
from shared.events.catalogue.deletion import DeletionStageChanged, EraseSubject
from tests.unit.deletion.factories import in_stage
from tests.unit.deletion.fake_store import FakeStore

FIRST, CAP, TIMEOUT = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
SETTINGS = {
    "deletion_retry_seconds": FIRST.total_seconds(),
    "deletion_retry_max_seconds": CAP.total_seconds(),
    "deletion_store_timeout_seconds": TIMEOUT.total_seconds(),
}


def test_the_wait_is_announced_again_with_back_off_then_escalated() -> None:
    waiting = in_stage("holds", window_closed=False)
    entered = waiting.stage_entered_at

    def check(after: timedelta) -> tuple[str, object]:
        return stages.cancel_window_check(waiting, entered + after, TIMEOUT, FIRST, CAP)

    assert check(timedelta(0)) == ("wait", entered + FIRST)  # just announced
    assert check(FIRST) == ("announce", entered + 2 * FIRST)
    assert check(2 * FIRST) == ("announce", entered + 4 * FIRST)  # doubling
    assert check(3 * CAP) == ("announce", entered + 4 * CAP)  # at most CAP apart
    assert check(TIMEOUT - FIRST) == ("announce", entered + TIMEOUT)  # never past the timeout
    assert check(TIMEOUT) == ("escalate", None)


def test_escalated_in_holds_keeps_its_window_and_goes_back_to_holds_only() -> None:
    waiting = in_stage("holds", window_closed=False)
    now = waiting.stage_entered_at + TIMEOUT
    escalated = stages.escalate(waiting, "accounts silent", now)
    assert escalated.escalated_in_holds
    assert escalated.waiting_in == "holds"
    assert stages.retry(escalated, now).stage == "holds"
    # A cancel accounts took (its event late) still cancels: nothing was erased.
    assert stages.cancel(escalated, now).stage == "cancelled"
    with pytest.raises(stages.StageConflict, match="no store was told"):
        stages.stores_answered(escalated, now)
    closed = stages.close_cancel_window(waiting, now)
    with pytest.raises(stages.StageConflict, match="only while accounts is awaited"):
        stages.escalate(closed, "no reason", now)
    # An escalation of an erasure is retried as before.
    erasing = in_stage("erasing")
    assert not stages.escalate(erasing, "late", now).escalated_in_holds
    assert stages.retry(stages.escalate(erasing, "late", now), now).stage == "erasing"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    fake = FakeStore()
    fake.install(monkeypatch)
    return fake


def _waiting(fake: FakeStore) -> Tracked:
    tracked = Tracked(in_stage("holds", window_closed=False), "user")
    fake.requests[tracked.request.request_id] = tracked
    return tracked


def _erase_commands(fake: FakeStore) -> list[EraseSubject]:
    return [e for e in fake.published if isinstance(e, EraseSubject)]


async def test_the_ticker_announces_holds_again_when_accounts_is_silent(fake: FakeStore) -> None:
    tracked = _waiting(fake)
    entered = tracked.request.stage_entered_at
    deps = fake.deps(entered + FIRST, **SETTINGS)
    after = await handlers.advance(None, deps, tracked)  # type: ignore[arg-type]
    assert after.request.stage == "holds"
    [announced] = fake.published
    assert isinstance(announced, DeletionStageChanged)
    assert (announced.request_id, announced.stage) == (tracked.request.request_id, "holds")
    assert fake.next_check[tracked.request.request_id] == entered + 2 * FIRST


async def test_at_the_timeout_it_is_escalated_and_nothing_is_erased(fake: FakeStore) -> None:
    tracked = _waiting(fake)
    deps = fake.deps(tracked.request.stage_entered_at + TIMEOUT, **SETTINGS)
    # Every store's receipt is there (stale ones, say): an escalation that read them as
    # answers would shred. No store was told to erase: it must not.
    fake.answered = set(deps.settings.store_names())
    after = await handlers.advance(None, deps, tracked)  # type: ignore[arg-type]
    assert after.request.stage == "escalated"
    assert "accounts" in (after.request.reason or "")
    assert fake.shredded == []
    assert _erase_commands(fake) == []
    assert fake.next_check[tracked.request.request_id] is None


async def test_a_late_confirmation_resumes_an_escalation_in_holds(fake: FakeStore) -> None:
    tracked = _waiting(fake)
    deps = fake.deps(tracked.request.stage_entered_at + TIMEOUT, **SETTINGS)
    await handlers.advance(None, deps, tracked)  # type: ignore[arg-type]
    r = tracked.request
    confirmed = DeletionConfirmed(user_id=r.subject_id, request_id=r.request_id)
    await handlers.deletion_confirmed(None, deps, confirmed)  # type: ignore[arg-type]
    resumed = fake.requests[r.request_id]
    assert resumed.request.stage == "holds"
    assert resumed.request.cancel_window_closed_at is not None
    after = await handlers.advance(None, deps, resumed)  # type: ignore[arg-type]
    assert after.request.stage == "erasing"
    assert [c.request_id for c in _erase_commands(fake)] == [r.request_id]


async def test_an_operator_retry_of_an_escalation_in_holds_erases_nothing(
    fake: FakeStore,
) -> None:
    tracked = _waiting(fake)
    deps = fake.deps(tracked.request.stage_entered_at + TIMEOUT, **SETTINGS)
    await handlers.advance(None, deps, tracked)  # type: ignore[arg-type]
    fake.published.clear()
    operator = tracked.request.subject_id  # any id
    retried = await handlers.retry_escalated(None, deps, tracked.request.request_id, operator)  # type: ignore[arg-type]
    assert retried.request.stage == "holds"
    assert [type(e) for e in fake.published] == [DeletionStageChanged]  # announced again
    after = await handlers.advance(None, deps, retried)  # type: ignore[arg-type]
    assert after.request.stage == "holds"  # until accounts confirms
    assert _erase_commands(fake) == []
