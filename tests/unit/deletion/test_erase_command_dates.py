"""An account's EraseSubject carries the dates the user's status showed for what remains.

After it, accounts deletes the user, who can no longer sign in to see the stages: the
notifier's last email quotes these dates instead (P-16). An item's erasure, where the
user keeps their account and its status page, carries none.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from services.deletion import context, handlers, store
from services.deletion.domain import stages
from services.deletion.store import Tracked
from shared.events.catalogue.deletion import EraseSubject
from tests.unit.deletion.factories import TIMING, in_stage
from tests.unit.deletion.fake_store import FakeStore

SETTINGS = {
    "deletion_grace_seconds": TIMING.grace.total_seconds(),
    "deletion_store_timeout_seconds": TIMING.store_timeout.total_seconds(),
    "deletion_backup_retention_seconds": TIMING.backup_retention.total_seconds(),
}


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    fake = FakeStore()
    fake.install(monkeypatch)

    async def none_found(*_: object) -> list[Any]:
        return []

    async def nothing(*_: object) -> None:
        return None

    monkeypatch.setattr(store, "history", none_found)
    monkeypatch.setattr(store, "snapshots_holding", none_found)
    monkeypatch.setattr(store, "certificate", nothing)
    return fake


def _waiting(fake: FakeStore, scope: stages.Scope = "account") -> Tracked:
    tracked = Tracked(in_stage("holds", scope), "user")
    fake.requests[tracked.request.request_id] = tracked
    return tracked


async def _shown(deps: handlers.Deps, tracked: Tracked) -> dict[str, Any]:
    """Each stage's expected date, as the user's status page shows it."""
    ctx = context.Context(deps.settings, None, deps)  # type: ignore[arg-type]
    described = await context.describe(None, ctx, tracked)  # type: ignore[arg-type]
    return {s["stage"]: s["expected_by"] for s in described["stages"]}


def _erase_commands(fake: FakeStore) -> list[EraseSubject]:
    return [e for e in fake.published if isinstance(e, EraseSubject)]


@pytest.mark.promise("P-16")
async def test_an_accounts_erase_command_carries_the_dates_its_status_showed(
    fake: FakeStore,
) -> None:
    tracked = _waiting(fake)
    # The ticker comes to it an hour after the grace period ended.
    now = tracked.request.grace_ends_at + timedelta(hours=1)
    deps = fake.deps(now, **SETTINGS)
    shown = await _shown(deps, tracked)

    after = await handlers.advance(None, deps, tracked)  # type: ignore[arg-type]

    assert after.request.stage == "erasing"
    [command] = _erase_commands(fake)
    assert command.shredded_by == now + TIMING.store_timeout
    assert command.backups_gone_by == now + TIMING.store_timeout + TIMING.backup_retention
    assert command.shredded_by.isoformat() == shown["shredded"]
    assert command.backups_gone_by.isoformat() == shown["complete"]
    # And what the status shows once erasing: the same dates.
    erasing = await _shown(deps, after)
    assert (erasing["shredded"], erasing["complete"]) == (shown["shredded"], shown["complete"])


@pytest.mark.promise("P-16")
async def test_a_retried_erasure_carries_the_dates_of_the_new_pass(fake: FakeStore) -> None:
    """An operator's retry erases again with a new store timeout: the dates move with it
    (the notifier mails once, but an erasure its email was given up on goes on)."""
    tracked = _waiting(fake)
    start = tracked.request.grace_ends_at
    deps = fake.deps(start, **SETTINGS)
    erasing = await handlers.advance(None, deps, tracked)  # type: ignore[arg-type]
    later = start + TIMING.store_timeout + timedelta(days=2)
    fake.requests[erasing.request.request_id] = erasing.with_request(
        stages.escalate(erasing.request, "no answer in time from: analytics", later)
    )
    retry_deps = fake.later(deps, later - start)
    request_id, operator = erasing.request.request_id, erasing.request.subject_id
    await handlers.retry_escalated(None, retry_deps, request_id, operator)  # type: ignore[arg-type]
    first, retried = _erase_commands(fake)
    assert first.backups_gone_by == start + TIMING.store_timeout + TIMING.backup_retention
    assert retried.shredded_by == later + TIMING.store_timeout
    assert retried.backups_gone_by == later + TIMING.store_timeout + TIMING.backup_retention
    # The link to the stages goes with every command, the same: the notifier mails the
    # first it can process, which may be the retry.
    assert first.status_key == retried.status_key == fake.status_keys[request_id]


@pytest.mark.promise("P-16")
async def test_only_an_account_erasure_mailed_to_its_user_gets_a_status_link(
    fake: FakeStore,
) -> None:
    """An account's user can no longer sign in once erasing starts: their command carries
    a link's secret. A lapsed sign-up (never mailed) and an item (whose user keeps their
    account and its status page) get none."""
    mailed = _waiting(fake)
    lapsed = Tracked(in_stage("holds", "account"), "retention")
    fake.requests[lapsed.request.request_id] = lapsed
    item = _waiting(fake, "device")
    deps = fake.deps(mailed.request.grace_ends_at, **SETTINGS)
    for tracked in (mailed, lapsed, item):
        await handlers.advance(None, deps, tracked)  # type: ignore[arg-type]
    keys = {c.request_id: c.status_key for c in _erase_commands(fake)}
    assert keys == {
        mailed.request.request_id: fake.status_keys[mailed.request.request_id],
        lapsed.request.request_id: None,
        item.request.request_id: None,
    }
    assert keys[mailed.request.request_id]


@pytest.mark.parametrize("scope", ["device", "request"])
async def test_an_items_erase_command_carries_no_dates(
    fake: FakeStore, scope: stages.Scope
) -> None:
    tracked = _waiting(fake, scope)
    deps = fake.deps(tracked.request.grace_ends_at, **SETTINGS)

    after = await handlers.advance(None, deps, tracked)  # type: ignore[arg-type]

    assert after.request.stage == "erasing"
    [command] = _erase_commands(fake)
    assert command.scope == scope
    assert (command.shredded_by, command.backups_gone_by) == (None, None)


@pytest.mark.promise("P-16")
async def test_a_snapshot_kept_longer_than_the_usual_retention_dates_the_backups(
    fake: FakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One taken with a longer retention (backups take --retention-seconds) outlives
    those taken until the erasure: the status and the mailed date wait for it."""
    monkeypatch.setattr(store, "snapshots_holding", fake.snapshots_holding)
    tracked = _waiting(fake)
    now = tracked.request.grace_ends_at + timedelta(hours=1)
    kept_long = now + TIMING.store_timeout + TIMING.backup_retention + timedelta(days=60)
    fake.snapshot_expiries = [now + timedelta(days=1), kept_long]
    deps = fake.deps(now, **SETTINGS)
    shown = await _shown(deps, tracked)

    await handlers.advance(None, deps, tracked)  # type: ignore[arg-type]

    [command] = _erase_commands(fake)
    assert command.backups_gone_by == kept_long
    assert shown["complete"] == kept_long.isoformat()
