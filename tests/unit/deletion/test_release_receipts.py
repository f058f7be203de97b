"""A retention release awaits its stores' receipts as an erasure does (P-13): a release a
store dead-lettered would otherwise leave the kept records there for ever."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta

import pytest

from services.deletion import handlers, store
from services.deletion.domain import stages
from services.deletion.store import Release, Tracked
from shared.events.catalogue.deletion import EraseSubject, SubjectErased
from tests.unit.deletion.factories import T0, in_stage
from tests.unit.deletion.fake_store import FakeStore, with_a_due_release

STORES = ("accounts", "notifier", "analytics")
RETRY = timedelta(seconds=60)  # the settings' default first resend
TIMEOUT = timedelta(days=3)  # the settings' default store timeout


def _deps(fake: FakeStore) -> handlers.Deps:
    # Given, not read from the environment: the e2e suites set shorter ones for their runs.
    return fake.deps(
        deletion_retry_seconds=RETRY.total_seconds(),
        deletion_retry_max_seconds=21600.0,
        deletion_store_timeout_seconds=TIMEOUT.total_seconds(),
    )


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    return with_a_due_release(monkeypatch)


def _sent(fake: FakeStore, attempts: int = 1) -> Release:
    """The fixture's release as sent ``attempts`` times from T0 on."""
    release = replace(
        fake.due_releases[0],
        sent_at=T0,
        expected_stores=STORES,
        send_attempts=attempts,
        next_send_at=T0 + RETRY,
        answer_deadline=T0 + TIMEOUT,
    )
    fake.due_releases[0] = release
    return release


async def _tick(fake: FakeStore, by: timedelta = timedelta(0)) -> int:
    deps = fake.later(_deps(fake), by)
    return await handlers.release_retained(None, deps)  # type: ignore[arg-type]


async def test_a_release_sent_first_expects_every_store_and_plans_its_resend(
    fake: FakeStore,
) -> None:
    assert await _tick(fake) == 1
    [command] = fake.published
    assert isinstance(command, EraseSubject)
    saved, next_check = fake.saved_releases[fake.due_releases[0].erase_id]
    assert saved.expected_stores == STORES
    assert (saved.sent_at, saved.send_attempts) == (T0, 1)
    assert (saved.next_send_at, saved.answer_deadline) == (T0 + RETRY, T0 + TIMEOUT)
    assert next_check == T0 + RETRY


async def test_an_unanswered_release_is_resent_under_its_id_with_back_off(
    fake: FakeStore,
) -> None:
    release = _sent(fake)
    fake.answered = {"accounts"}
    assert await _tick(fake, RETRY) == 1
    [command] = fake.published
    assert isinstance(command, EraseSubject)
    assert command.request_id == release.erase_id  # the stores know it by this id
    saved, next_check = fake.saved_releases[release.erase_id]
    assert saved.send_attempts == 2
    assert saved.next_send_at == T0 + RETRY + 2 * RETRY  # doubled
    assert saved.answer_deadline == T0 + TIMEOUT  # the timeout does not move
    assert saved.sent_at == T0
    assert next_check == saved.next_send_at


async def test_a_release_not_due_for_a_resend_waits(fake: FakeStore) -> None:
    release = _sent(fake)
    assert await _tick(fake, RETRY / 2) == 0
    assert fake.published == []
    assert fake.saved_releases[release.erase_id][1] == T0 + RETRY


async def test_a_release_every_store_answered_is_done(fake: FakeStore) -> None:
    release = _sent(fake)
    fake.answered = set(STORES)
    assert await _tick(fake, RETRY) == 0
    assert fake.published == []
    assert fake.answered_releases == [release.erase_id]


async def test_an_unanswered_release_escalates_at_the_store_timeout(fake: FakeStore) -> None:
    release = _sent(fake, attempts=9)
    fake.answered = {"accounts", "analytics"}
    assert await _tick(fake, TIMEOUT) == 0
    assert fake.published == []
    assert fake.escalated_releases == {release.erase_id: "no answer in time from: notifier"}


async def test_a_release_sent_before_it_was_awaited_is_resent_with_a_fresh_timeout(
    fake: FakeStore,
) -> None:
    """Sent once by an earlier version (or restarted by an operator or a hold's release):
    no resend planned and no deadline; it goes again at once, with the whole timeout."""
    release = replace(_sent(fake), next_send_at=None, answer_deadline=None)
    fake.due_releases[0] = release
    assert await _tick(fake, timedelta(days=400)) == 1
    saved, _ = fake.saved_releases[release.erase_id]
    assert saved.answer_deadline == T0 + timedelta(days=400) + TIMEOUT


async def test_a_release_receipt_answers_the_release_and_never_wakes_the_request(
    fake: FakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    release = _sent(fake)
    escalated = stages.escalate(in_stage("backups_pending"), "verifier found rows", T0)
    fake.requests[release.request_id] = Tracked(escalated, "user")

    async def of_release(_conn: object, erase_id: uuid.UUID) -> uuid.UUID | None:
        return release.request_id if erase_id == release.erase_id else None

    async def recorded(*_args: object) -> bool:
        return True

    monkeypatch.setattr(store, "request_of_release", of_release)
    monkeypatch.setattr(store, "record_receipt", recorded)
    receipt = SubjectErased(
        request_id=release.erase_id,
        subject_id=escalated.subject_id,
        store="notifier",
        erased={},
        retained_anonymised={},
        erased_at=T0,
    )
    await handlers.subject_erased(None, _deps(fake), receipt)  # type: ignore[arg-type]
    assert fake.answered_releases == [release.erase_id]
    assert release.request_id not in fake.next_check  # the escalated request sleeps on


def test_the_receipt_step_shared_by_erasures_and_releases() -> None:
    deadline, resend = T0 + TIMEOUT, T0 + RETRY
    assert stages.receipt_step((), T0 + TIMEOUT, resend, deadline) == "answered"
    assert stages.receipt_step(("notifier",), T0 + TIMEOUT, resend, deadline) == "escalate"
    assert stages.receipt_step(("notifier",), T0 + RETRY, resend, deadline) == "resend"
    assert stages.receipt_step(("notifier",), T0, resend, deadline) == "wait"
    assert stages.receipt_step(("notifier",), T0, None, None) == "resend"
