"""A held subject's requests: each starts paused, and the hold's free text stays in
legal_holds (a paused request carries the code ``legal_hold``, never the operator's
words, on ``deletion.stages``)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from services.deletion import handlers
from services.deletion.legal_holds import Hold
from services.deletion.store import Tracked
from shared.events.catalogue.deletion import DeletionStageChanged
from tests.unit.deletion.factories import T0, a_request, in_stage
from tests.unit.deletion.fake_store import FakeStore

REASON = "case 2025-117, Smith v. Example (disclosure order)"


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    fake = FakeStore()
    fake.install(monkeypatch)
    return fake


def _tracked(fake: FakeStore, tracked: Tracked) -> Tracked:
    fake.requests[tracked.request.request_id] = tracked
    return tracked


def _announced(fake: FakeStore) -> list[DeletionStageChanged]:
    return [e for e in fake.published if isinstance(e, DeletionStageChanged)]


async def test_a_new_request_of_a_held_subject_pauses_before_its_grace_starts(
    fake: FakeStore,
) -> None:
    """On arrival the subject may have been busy (an operator's hold action under way):
    the request was left `requested`, and the ticker's first step must look again."""
    tracked = _tracked(fake, Tracked(a_request(), "user"))
    placer = uuid.uuid4()
    fake.holds[tracked.request.subject_id] = Hold(REASON, placer, T0)
    advanced = await handlers.advance(None, fake.deps(), tracked)  # type: ignore[arg-type]
    r = advanced.request
    assert (r.stage, r.paused_from, r.reason) == ("paused", "requested", "legal_hold")
    assert [e.stage for e in _announced(fake)] == ["paused"]  # never announced in grace
    assert fake.next_check[r.request_id] is None  # only the release resumes it


async def test_a_new_request_whose_subject_is_busy_waits_in_requested(fake: FakeStore) -> None:
    tracked = _tracked(fake, Tracked(a_request(), "user"))
    fake.busy_subjects.add(tracked.request.subject_id)
    deps = fake.deps(deletion_retry_seconds=5)
    advanced = await handlers.advance(None, deps, tracked)  # type: ignore[arg-type]
    assert advanced.request.stage == "requested"
    assert fake.published == []
    assert fake.next_check[tracked.request.request_id] == T0 + timedelta(seconds=5)


async def test_an_unheld_request_starts_its_grace_period(fake: FakeStore) -> None:
    tracked = _tracked(fake, Tracked(a_request(), "user"))
    advanced = await handlers.advance(None, fake.deps(), tracked)  # type: ignore[arg-type]
    assert advanced.request.stage == "grace"


@pytest.mark.parametrize("stage", ["requested", "holds"])
async def test_a_paused_request_publishes_the_hold_code_not_the_operators_words(
    fake: FakeStore, stage: str
) -> None:
    request = a_request() if stage == "requested" else in_stage(stage)
    tracked = _tracked(fake, Tracked(request, "user"))
    fake.holds[tracked.request.subject_id] = Hold(REASON, uuid.uuid4(), T0)
    advanced = await handlers.advance(None, fake.deps(), tracked)  # type: ignore[arg-type]
    assert advanced.request.reason == "legal_hold"
    [paused] = _announced(fake)
    assert (paused.stage, paused.reason) == ("paused", "legal_hold")
    assert REASON not in paused.model_dump_json()
