"""The in-memory revocations every API but accounts checks tokens against (P-08)."""

from datetime import UTC, datetime, timedelta
from uuid import UUID, uuid4

from shared.auth import Claims
from shared.auth.revocations import Revocations
from shared.events.catalogue.accounts import SessionsRevoked

KEEP = timedelta(seconds=360)
T0 = datetime(2026, 1, 5, 12, 0, 0, 700_000, tzinfo=UTC)  # .7 s into a second


def _claims(principal: UUID, session: UUID, issued: datetime) -> Claims:
    iat = int(issued.timestamp())  # as PyJWT stamps it: whole seconds, truncated
    return Claims(sub=str(principal), sid=str(session), kind="user", iat=iat, exp=iat + 300)


def _one_session(principal: UUID, session: UUID, at: datetime = T0) -> SessionsRevoked:
    return SessionsRevoked(
        principal_id=principal, session_ids=(session,), revoked_at=at, reason="logout"
    )


def _all_sessions(principal: UUID, sessions: tuple[UUID, ...] = ()) -> SessionsRevoked:
    return SessionsRevoked(
        principal_id=principal,
        session_ids=sessions,
        issued_before=T0,
        revoked_at=T0,
        reason="password-changed",
    )


def test_an_ended_session_refuses_its_tokens_and_no_other() -> None:
    state = Revocations(KEEP)
    user, ended, other = uuid4(), uuid4(), uuid4()
    state.apply(_one_session(user, ended))
    assert state.revoked(_claims(user, ended, T0 - timedelta(seconds=10)))
    assert not state.revoked(_claims(user, other, T0 - timedelta(seconds=10)))
    assert not state.revoked(_claims(uuid4(), uuid4(), T0 - timedelta(seconds=10)))


def test_all_sessions_of_a_principal_refuse_tokens_issued_before_the_cutoff() -> None:
    state = Revocations(KEEP)
    user = uuid4()
    state.apply(_all_sessions(user))
    assert state.revoked(_claims(user, uuid4(), T0 - timedelta(seconds=1)))
    assert state.revoked(_claims(user, uuid4(), T0 - timedelta(minutes=4)))
    assert not state.revoked(_claims(user, uuid4(), T0 + timedelta(seconds=1)))
    assert not state.revoked(_claims(uuid4(), uuid4(), T0 - timedelta(seconds=1)))


def test_the_new_session_of_a_password_change_in_the_same_second_stays_valid() -> None:
    state = Revocations(KEEP)
    user, old, new = uuid4(), uuid4(), uuid4()
    state.apply(_all_sessions(user, (old,)))
    # Both issued within T0's second: iat cannot tell them apart, the session id does.
    assert state.revoked(_claims(user, old, T0 - timedelta(milliseconds=500)))
    assert not state.revoked(_claims(user, new, T0 + timedelta(milliseconds=100)))


def test_a_later_cutoff_wins_and_an_older_one_never_lowers_it() -> None:
    state = Revocations(KEEP)
    user = uuid4()
    later = _all_sessions(user).model_copy(update={"issued_before": T0 + timedelta(minutes=1)})
    state.apply(later)
    state.apply(_all_sessions(user))  # read again, or out of order: changes nothing
    assert state.revoked(_claims(user, uuid4(), T0 + timedelta(seconds=30)))


def test_entries_are_forgotten_once_every_token_they_refuse_has_expired() -> None:
    state = Revocations(KEEP)
    user, session = uuid4(), uuid4()
    state.apply(_one_session(user, session))
    state.apply(_all_sessions(uuid4()))
    assert len(state) == 2
    state.prune((T0 + KEEP - timedelta(seconds=1)).timestamp())
    assert len(state) == 2
    assert state.revoked(_claims(user, session, T0))
    state.prune((T0 + KEEP + timedelta(seconds=1)).timestamp())
    assert len(state) == 0
    assert not state.revoked(_claims(user, session, T0))


def test_a_session_named_twice_is_kept_until_its_last_revocation_expires() -> None:
    state = Revocations(KEEP)
    user, session = uuid4(), uuid4()
    state.apply(_one_session(user, session, T0 + timedelta(minutes=2)))
    state.apply(_one_session(user, session, T0))
    state.prune((T0 + KEEP + timedelta(seconds=1)).timestamp())
    assert state.revoked(_claims(user, session, T0))
