"""A sessions.revoked record the reader cannot apply as it stands (a time that names no
instant) never stops the reader: were it to raise, the reader would restart at that
record forever, never be ready, and every authenticated call would get 503."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest

from shared.auth import Claims
from shared.auth.revocation_reader import RevocationReader
from shared.auth.revocations import Revocations
from shared.bus.delivery import Delivery, read_record
from shared.config import PlatformSettings
from shared.events.catalogue.accounts import SessionsRevoked
from shared.events.envelope import Envelope, encode_envelope
from shared.events.topics import ACCOUNTS_SESSIONS

KEEP = timedelta(seconds=360)
YEAR_ONE = "0001-01-01T00:00:00"  # no zone: local time, out of range for .timestamp()


def _claims(principal: UUID, session: UUID, iat: int | None = None) -> Claims:
    iat = int(time.time()) - 10 if iat is None else iat
    return Claims(sub=str(principal), sid=str(session), kind="user", iat=iat, exp=iat + 300)


def _record(principal: UUID, sessions: tuple[UUID, ...], **times: str) -> Delivery:
    """The record as the reader gets it from Kafka: raw bytes through read_record."""
    data: dict[str, Any] = {
        "principal_id": str(principal),
        "session_ids": [str(s) for s in sessions],
        "reason": "logout",
        **times,
    }
    envelope = Envelope(
        type=SessionsRevoked.type_name(), source="accounts", subject=str(principal), data=data
    )
    read = read_record(
        encode_envelope(envelope), str(principal).encode(), ACCOUNTS_SESSIONS.name, 0, 7
    )
    assert isinstance(read, Delivery), read
    return read


def test_a_revoked_at_that_names_no_instant_still_ends_its_sessions() -> None:
    state = Revocations(KEEP)
    user, session = uuid4(), uuid4()
    event = SessionsRevoked(
        principal_id=user,
        session_ids=(session,),
        revoked_at=datetime.fromisoformat(YEAR_ONE),
        reason="logout",
    )
    now = time.time()
    assert state.apply(event, now=now) == ("revoked_at",)
    assert state.revoked(_claims(user, session))
    # Remembered a token lifetime from when it was read: no token of it slips through.
    state.prune(now + KEEP.total_seconds() - 1)
    assert state.revoked(_claims(user, session))
    state.prune(now + KEEP.total_seconds() + 1)
    assert not state.revoked(_claims(user, session))


def test_an_issued_before_that_names_no_instant_is_left_out_and_the_rest_applied() -> None:
    state = Revocations(KEEP)
    user, session = uuid4(), uuid4()
    event = SessionsRevoked(
        principal_id=user,
        session_ids=(session,),
        issued_before=datetime.fromisoformat(YEAR_ONE),
        revoked_at=datetime.now(UTC),
        reason="password-changed",
    )
    assert state.apply(event) == ("issued_before",)
    assert state.revoked(_claims(user, session))
    assert not state.revoked(_claims(user, uuid4()))
    assert len(state) == 1


def test_a_readable_event_is_applied_whole() -> None:
    state = Revocations(KEEP)
    user = uuid4()
    event = SessionsRevoked(
        principal_id=user,
        issued_before=datetime.now(UTC),
        revoked_at=datetime.now(UTC),
        reason="password-changed",
    )
    assert state.apply(event) == ()
    assert state.revoked(_claims(user, uuid4(), iat=int(time.time()) - 60))


@pytest.fixture
def reader(tmp_path: Path) -> RevocationReader:
    return RevocationReader(PlatformSettings(state_dir=str(tmp_path)))


def test_the_reader_applies_a_record_with_a_time_of_the_year_one_and_goes_on(
    reader: RevocationReader, caplog: pytest.LogCaptureFixture
) -> None:
    user, session, other = uuid4(), uuid4(), uuid4()
    with caplog.at_level(logging.WARNING, logger="shared.auth.revocation_reader"):
        reader._apply(_record(user, (session,), revoked_at=YEAR_ONE, issued_before=YEAR_ONE))
        reader._apply(_record(user, (other,), revoked_at=datetime.now(UTC).isoformat()))
    assert reader.revocations.revoked(_claims(user, session))
    assert reader.revocations.revoked(_claims(user, other))  # the next record applies too
    [record] = [r for r in caplog.records if r.name == "shared.auth.revocation_reader"]
    assert record.getMessage() == (
        f"sessions.revoked record {ACCOUNTS_SESSIONS.name}[0]@7: revoked_at, issued_before"
        " is no readable time; applied without it"
    )
    assert str(user) not in caplog.text  # where the record is, never whose
    assert str(session) not in caplog.text


@pytest.mark.parametrize("error", [ValueError, OverflowError, OSError, TypeError])
def test_a_record_that_cannot_be_applied_is_logged_and_skipped(
    reader: RevocationReader,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    error: type[Exception],
) -> None:
    user = uuid4()

    def refuse(_event: SessionsRevoked, now: float | None = None) -> tuple[str, ...]:
        raise error(f"bad time for {user}")

    monkeypatch.setattr(reader.revocations, "apply", refuse)
    with caplog.at_level(logging.WARNING, logger="shared.auth.revocation_reader"):
        reader._apply(_record(user, (uuid4(),), revoked_at=YEAR_ONE))  # no exception
    [record] = [r for r in caplog.records if r.name == "shared.auth.revocation_reader"]
    assert record.getMessage() == (
        f"sessions.revoked record {ACCOUNTS_SESSIONS.name}[0]@7 cannot be applied"
        f" ({error.__name__}); skipped"
    )
    assert str(user) not in caplog.text
