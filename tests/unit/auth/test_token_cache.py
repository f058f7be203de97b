"""Verified tokens are remembered, but their time limits are checked on every use."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import jwt
import jwt.api_jwt
import pytest

from shared.auth import InvalidToken, issue_token, verify_token
from shared.auth import tokens as tokens_module
from shared.config import DEV_TOKEN_PRIVATE_KEY, DEV_TOKEN_PUBLIC_KEY


@pytest.fixture(autouse=True)
def empty_cache() -> Iterator[None]:
    tokens_module._verified.clear()
    yield
    tokens_module._verified.clear()


def _token(ttl: timedelta = timedelta(minutes=5)) -> str:
    return issue_token(DEV_TOKEN_PRIVATE_KEY, subject="u1", session_id="s1", kind="user", ttl=ttl)


def _clock_at(monkeypatch: pytest.MonkeyPatch, timestamp: float) -> None:
    """Our clock and PyJWT's, both at ``timestamp``."""
    monkeypatch.setattr(tokens_module, "_clock", lambda: timestamp)
    monkeypatch.setattr(jwt.api_jwt, "datetime", _FrozenDatetime(timestamp))


def test_a_remembered_token_is_refused_once_it_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    token = _token(ttl=timedelta(seconds=60))
    claims = verify_token(DEV_TOKEN_PUBLIC_KEY, token)  # verified and remembered
    _clock_at(monkeypatch, float(claims.exp) - 1)
    assert verify_token(DEV_TOKEN_PUBLIC_KEY, token) == claims
    _clock_at(monkeypatch, float(claims.exp))
    with pytest.raises(InvalidToken):
        verify_token(DEV_TOKEN_PUBLIC_KEY, token)


def test_a_remembered_token_is_refused_before_it_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    token = _token()
    claims = verify_token(DEV_TOKEN_PUBLIC_KEY, token)
    _clock_at(monkeypatch, float(claims.iat) - 10)  # the clock went back: not yet valid
    with pytest.raises(InvalidToken):
        verify_token(DEV_TOKEN_PUBLIC_KEY, token)


def test_only_the_exact_token_is_remembered() -> None:
    token = _token()
    verify_token(DEV_TOKEN_PUBLIC_KEY, token)
    head, payload, signature = token.split(".")
    forged = f"{head}.{payload}.{signature[:-4]}AAAA"  # same claims, another signature
    with pytest.raises(InvalidToken):
        verify_token(DEV_TOKEN_PUBLIC_KEY, forged)
    with pytest.raises(InvalidToken):  # and not for another key either
        verify_token(DEV_TOKEN_PUBLIC_KEY.replace("A", "B", 1), token)


def test_failures_are_not_remembered_and_the_cache_is_bounded() -> None:
    with pytest.raises(InvalidToken):
        verify_token(DEV_TOKEN_PUBLIC_KEY, "not.a.token")
    assert len(tokens_module._verified._entries) == 0
    small = tokens_module._VerifiedTokens(size=2)
    claims = verify_token(DEV_TOKEN_PUBLIC_KEY, _token())
    for name in ("a", "b", "c"):
        small.put(("k", name), claims, 0.0)
    assert small.get(("k", "a"), 1.0) is None
    assert small.get(("k", "c"), 1.0) == claims


def test_a_token_from_an_issuer_a_little_ahead_is_taken_but_not_past_its_expiry(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The accounts API's clock a second ahead of this process's: its fresh tokens must
    not be refused here (a 401 for every signed-in call), and none lives past exp."""
    token = _token(ttl=timedelta(seconds=60))
    claims = jwt.decode(token, options={"verify_signature": False})
    _clock_at(monkeypatch, float(claims["iat"]) - 1)
    assert verify_token(DEV_TOKEN_PUBLIC_KEY, token).sub == "u1"
    tokens_module._verified.clear()
    _clock_at(monkeypatch, float(claims["iat"]) - tokens_module.CLOCK_SKEW_SECONDS - 1)
    with pytest.raises(InvalidToken):  # further ahead than any clock should be
        verify_token(DEV_TOKEN_PUBLIC_KEY, token)
    _clock_at(monkeypatch, float(claims["exp"]))
    with pytest.raises(InvalidToken):  # the allowance is not PyJWT's on exp as well
        verify_token(DEV_TOKEN_PUBLIC_KEY, token)


class _FrozenDatetime:
    """Stands in for PyJWT's ``datetime`` so that its own clock agrees with ours."""

    def __init__(self, timestamp: float) -> None:
        self._timestamp = timestamp

    def now(self, tz: object = None) -> _FrozenNow:
        return _FrozenNow(self._timestamp)


class _FrozenNow:
    def __init__(self, timestamp: float) -> None:
        self._timestamp = timestamp

    def timestamp(self) -> float:
        return self._timestamp
