"""A step that fails the same way every time is put back at the back-off's cap, however
long it has been failing: the ticker's error handler must not raise in turn, which
would undo the whole batch (every request claimed with it, and the releases) at every
round for ever."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from services.deletion import handlers
from services.deletion.store import Tracked
from services.deletion.worker import Ticker
from tests.unit.deletion.factories import T0, in_stage
from tests.unit.deletion.fake_store import FakeStore
from tests.unit.deletion.test_verification_failures import Pool


@pytest.mark.parametrize("failed_before", [1023, 1024, 100_000])
async def test_a_step_failing_for_ever_is_deferred_by_the_cap_not_raised(
    monkeypatch: pytest.MonkeyPatch, failed_before: int
) -> None:
    fake = FakeStore()
    fake.install(monkeypatch)
    tracked = replace(Tracked(in_stage("grace"), "user"), step_failures=failed_before)
    request_id = tracked.request.request_id
    fake.requests[request_id] = tracked

    async def broken(*_args: object) -> Tracked:
        raise RuntimeError("a step that fails every time")

    monkeypatch.setitem(handlers.STEPS, "grace", broken)
    deps = fake.deps(deletion_retry_seconds=60, deletion_retry_max_seconds=21600)

    assert await Ticker(Pool(), deps)._advance(Pool(), tracked) is None  # type: ignore[arg-type]

    assert fake.requests[request_id].step_failures == failed_before + 1
    assert fake.next_check[request_id] == T0 + timedelta(seconds=21600)
