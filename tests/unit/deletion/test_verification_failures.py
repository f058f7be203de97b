"""A verification that raises every time (a snapshot pg_restore cannot restore) is put
back with back-off and escalated at last, never retried at every lease for ever; its
log lines carry the error's type, never its message (a pg_restore's may quote rows)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import replace
from datetime import timedelta
from uuid import UUID

import pytest

from services.deletion import handlers
from services.deletion.domain.certificate import Verdict
from services.deletion.store import Tracked
from services.deletion.worker import Ticker
from shared.events.catalogue.deletion import DeletionStageChanged
from tests.unit.deletion.factories import T0, in_stage
from tests.unit.deletion.fake_store import FakeStore

QUOTED_ROW = "CONTEXT: COPY users, line 1: alice@example.com"


class Pool:
    """The ticker's pool: a connection whose statements the fake store answers."""

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Pool]:
        yield self

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[None]:
        yield


async def failing(_batch: Sequence[Tracked]) -> dict[UUID, Verdict]:
    raise RuntimeError(QUOTED_ROW)


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    fake = FakeStore()
    fake.install(monkeypatch)
    return fake


async def test_a_failing_verification_backs_off_then_escalates(
    fake: FakeStore, caplog: pytest.LogCaptureFixture
) -> None:
    tracked = Tracked(in_stage("backups_pending"), "user")
    request_id = tracked.request.request_id
    fake.requests[request_id] = tracked
    deps = replace(fake.deps(deletion_retry_seconds=60), verify=failing)
    ticker = Ticker(Pool(), deps)  # type: ignore[arg-type]
    caplog.set_level(logging.ERROR, logger="services.deletion.worker")

    delays = []
    for failures in range(1, handlers.VERIFY_FAILURES_ESCALATED):
        await ticker._verify([fake.requests[request_id]])  # raises nothing
        assert fake.requests[request_id].step_failures == failures
        assert fake.requests[request_id].request.stage == "backups_pending"
        due = fake.next_check[request_id]
        assert due is not None
        delays.append((due - T0).total_seconds())
    assert delays == [60, 120, 240, 480]  # doubling, as a failed step's

    await ticker._verify([fake.requests[request_id]])
    escalated = fake.requests[request_id]
    assert escalated.request.stage == "escalated"
    assert escalated.request.reason == (
        f"verification failed {handlers.VERIFY_FAILURES_ESCALATED} times in a row (RuntimeError)"
    )
    assert fake.next_check[request_id] is None  # an operator's now
    assert escalated.step_failures == 0  # a retry's verification counts afresh
    [announced] = [e for e in fake.published if isinstance(e, DeletionStageChanged)]
    assert announced.stage == "escalated"

    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == handlers.VERIFY_FAILURES_ESCALATED
    assert all(str(request_id) in m and "RuntimeError" in m for m in logged)
    assert "alice" not in caplog.text
    assert "escalated" in logged[-1]


async def test_a_verification_that_passes_forgets_the_failures_before_it(
    fake: FakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    tracked = replace(Tracked(in_stage("backups_pending"), "user"), step_failures=3)
    request_id = tracked.request.request_id
    fake.requests[request_id] = tracked

    async def clean(batch: Sequence[Tracked]) -> dict[UUID, Verdict]:
        return {t.request.request_id: Verdict((), ("postgres:accounts",), True) for t in batch}

    async def complete(_conn: object, _deps: object, current: Tracked, _v: Verdict) -> Tracked:
        return current

    monkeypatch.setattr(handlers, "complete", complete)
    ticker = Ticker(Pool(), replace(fake.deps(), verify=clean))  # type: ignore[arg-type]
    await ticker._verify([tracked])
    assert fake.requests[request_id].step_failures == 0


async def test_a_failed_verification_waits_no_longer_than_the_back_off_cap(
    fake: FakeStore,
) -> None:
    tracked = replace(Tracked(in_stage("backups_pending"), "user"), step_failures=2)
    fake.requests[tracked.request.request_id] = tracked
    deps = fake.deps(deletion_retry_seconds=60, deletion_retry_max_seconds=90)
    due = await handlers.verification_failed(None, deps, tracked, "BackupError")  # type: ignore[arg-type]
    assert due == T0 + timedelta(seconds=90)
