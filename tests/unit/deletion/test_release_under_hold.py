"""A retention release never goes while the subject is under a legal hold (P-13)."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta

import pytest

from services.deletion import handlers
from services.deletion.legal_holds import Hold
from services.deletion.store import Tracked
from shared.events.catalogue.deletion import UNDER_LEGAL_HOLD, EraseSubject
from tests.unit.deletion.factories import T0, in_stage
from tests.unit.deletion.fake_store import FakeStore, with_a_due_release


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeStore:
    return with_a_due_release(monkeypatch)


def _subject(fake: FakeStore) -> uuid.UUID:
    return next(iter(fake.requests.values())).request.subject_id


async def test_a_due_release_goes_when_no_hold_is_in_force(fake: FakeStore) -> None:
    assert await handlers.release_retained(None, fake.deps()) == 1  # type: ignore[arg-type]
    [command] = fake.published
    assert isinstance(command, EraseSubject)
    assert (command.request_id, command.retain_categories) == (
        fake.due_releases[0].erase_id,
        (),
    )
    assert fake.sent_releases == [fake.due_releases[0].erase_id]


async def test_a_held_subject_keeps_its_records_and_the_release_waits(fake: FakeStore) -> None:
    fake.holds[_subject(fake)] = Hold("litigation", uuid.uuid4(), T0)
    assert await handlers.release_retained(None, fake.deps()) == 0  # type: ignore[arg-type]
    assert fake.published == []
    assert fake.sent_releases == []  # unsent: claimed again once the hold is released


async def test_a_subject_an_operator_is_holding_right_now_waits_too(fake: FakeStore) -> None:
    fake.busy_subjects.add(_subject(fake))  # a hold may be committing: never guessed
    assert await handlers.release_retained(None, fake.deps()) == 0  # type: ignore[arg-type]
    assert fake.published == []
    assert fake.sent_releases == []


async def test_an_erase_command_sent_under_a_hold_tells_the_stores_to_let_nothing_go_early(
    fake: FakeStore,
) -> None:
    """A hold placed while the account is erasing: the command (sent again until every
    store answers) says so, and accounts then keeps even invoices whose own period ended."""
    tracked = replace(
        Tracked(in_stage("erasing"), "user"), retain_categories=("financial_records",)
    )
    await handlers._send_erase(None, fake.deps(), tracked, T0)  # type: ignore[arg-type]
    fake.holds[tracked.request.subject_id] = Hold("claim", uuid.uuid4(), T0)
    await handlers._send_erase(None, fake.deps(), tracked, T0)  # type: ignore[arg-type]
    before, after = fake.published
    assert isinstance(before, EraseSubject)
    assert isinstance(after, EraseSubject)
    assert before.retain_categories == ("financial_records",)
    assert after.retain_categories == ("financial_records", UNDER_LEGAL_HOLD)


async def test_a_request_whose_subject_an_operator_is_holding_waits_where_it_is(
    fake: FakeStore,
) -> None:
    """The ticker holds the claimed request: it never waits for the subject's hold (an
    operator placing one locks the subject's requests after it); it looks again later."""
    tracked = Tracked(in_stage("holds"), "user")
    fake.requests[tracked.request.request_id] = tracked
    fake.busy_subjects.add(tracked.request.subject_id)
    deps = fake.deps(deletion_retry_seconds=5)
    advanced = await handlers.advance(None, deps, tracked)  # type: ignore[arg-type]
    assert advanced.request.stage == "holds"
    assert fake.published == []  # no store told to erase, no stage announced
    assert fake.next_check[tracked.request.request_id] == T0 + timedelta(seconds=5)
