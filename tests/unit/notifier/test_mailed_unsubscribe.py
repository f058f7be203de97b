"""A reply to our unsubscribe mailto: the token read from its subject, and what it stops."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from services.notifier import store
from services.notifier.config import NotifierSettings
from services.notifier.domain import unsubscribe
from services.notifier.domain.unsubscribe import MailedRequest, mailed_request
from services.notifier.routes import inbound

TOKEN = "AQMx" + "a" * 40 + "_-Z9"
SETTINGS = NotifierSettings(environment="test")
SECRET = SETTINGS.notifier_unsubscribe_secret.get_secret_value().encode()
INDEX = bytes(range(32))


@pytest.mark.parametrize(
    ("subject", "expected"),
    [
        (f"unsubscribe {TOKEN}", MailedRequest(TOKEN)),
        (f"Re: Unsubscribe {TOKEN}", MailedRequest(TOKEN)),
        (f'"unsubscribe all {TOKEN}"', MailedRequest(TOKEN)),  # the older instruction
        (f"UNSUBSCRIBE ALL {TOKEN} please", MailedRequest(TOKEN)),
        ("unsubscribe", None),  # the old mailto's bare subject: nothing to act on
        ("unsubscribe me please", None),  # words, not a token
        (f"subscribe {TOKEN}", None),
        ("", None),
    ],
)
def test_the_token_is_read_from_the_subject(subject: str, expected: MailedRequest | None) -> None:
    assert mailed_request(subject) == expected


async def _post_reply(subject: str, monkeypatch: pytest.MonkeyPatch) -> tuple[Any, list[Any]]:
    """Post a raw reply to the inbound route; returns its JSON and the suppressions."""
    suppressed: list[tuple[bytes, str, str]] = []

    async def suppress(_conn: object, index: bytes, scope: str, source: str) -> None:
        suppressed.append((index, scope, source))

    @contextlib.asynccontextmanager
    async def acquire() -> AsyncIterator[object]:
        yield object()

    monkeypatch.setattr(store, "suppress", suppress)
    app = FastAPI()
    app.include_router(inbound.router)
    app.state.settings = SETTINGS
    app.state.runtime = SimpleNamespace(pool=SimpleNamespace(acquire=acquire))
    secret = SETTINGS.notifier_inbound_secret.get_secret_value()
    raw = f"From: ada@example.org\r\nSubject: {subject}\r\n\r\n".encode()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        response = await client.post(
            "/inbound/mail", content=raw, headers={inbound.INBOUND_HEADER: secret}
        )
    assert response.status_code == 202, response.text
    return response.json(), suppressed


@pytest.mark.promise("P-34")
@pytest.mark.parametrize("scope", ["marketing", "service_announcement", "all"])
@pytest.mark.parametrize("words", ["unsubscribe", "Re: unsubscribe", "unsubscribe all"])
async def test_every_mailed_request_stops_all_email_whatever_the_tokens_category(
    scope: str, words: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = unsubscribe.issue(SECRET, INDEX, scope)
    outcome, suppressed = await _post_reply(f"{words} {token}", monkeypatch)
    assert outcome == {"action": "unsubscribed", "scope": "all", "reason": None}
    assert suppressed == [(INDEX, "all", "mailto")]


async def test_a_token_that_is_not_ours_stops_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    token = unsubscribe.issue(b"another secret", INDEX, "marketing")
    outcome, suppressed = await _post_reply(f"unsubscribe {token}", monkeypatch)
    assert outcome["action"] == "ignored"
    assert suppressed == []
