"""An open inbox stream lasts only while its session would be accepted by a new request."""

from __future__ import annotations

import time
from types import SimpleNamespace
from typing import Any

import pytest

from services.notifier.routes.inbox import session_still_open
from shared.auth import Claims
from shared.observability import Problem


def _request(check: Any) -> Any:
    return SimpleNamespace(app=SimpleNamespace(state=SimpleNamespace(session_check=check)))


def _claims(expires_in: int = 300) -> Claims:
    now = int(time.time())
    return Claims(sub="u", sid="s", kind="user", exp=now + expires_in, iat=now)


async def _open(_request: Any, _claims: Claims) -> bool:
    return True


async def _revoked(_request: Any, _claims: Claims) -> bool:
    return False


async def _catching_up(_request: Any, _claims: Claims) -> bool:
    raise Problem(503, "Unavailable", "sessions not read yet", slug="sessions-not-read")


@pytest.mark.parametrize(
    ("check", "claims", "still_open"),
    [
        (_open, _claims(), True),
        (_revoked, _claims(), False),
        (_open, _claims(expires_in=-1), False),
        # A replica whose revocation list is behind cannot tell a revoked session: the
        # stream ends, as a new request there would be refused.
        (_catching_up, _claims(), False),
    ],
    ids=["open", "revoked", "expired", "list-behind"],
)
async def test_a_stream_stays_open_only_while_its_session_would_be_accepted(
    check: Any, claims: Claims, still_open: bool
) -> None:
    assert await session_still_open(_request(check), claims) is still_open
