"""A value PostgreSQL cannot store (text with a NUL) is the client's 422, in every service."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import asyncpg
import httpx
import pytest
from fastapi import FastAPI

from shared.observability import PROBLEM_CONTENT_TYPE, install_problem_handlers
from tests.unit.observability.conftest import client_for

SECRET = "court\x00order jane@example.com"


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/holds/{hold_id}")
    async def hold(hold_id: str) -> None:
        # What PostgreSQL answers text holding a NUL (SQLSTATE 22021).
        raise asyncpg.exceptions.CharacterNotInRepertoireError(
            f'invalid byte sequence for encoding "UTF8": 0x00 ({SECRET})'
        )

    @app.post("/dates")
    async def dates() -> None:
        # What asyncpg raises when a query argument cannot be encoded (a date past 9999 UTC).
        raise asyncpg.exceptions.DataError(
            f"invalid input for query argument $1: {SECRET!r} (date value out of range)"
        )

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(_app()) as client:
        yield client


async def test_text_the_database_refuses_is_a_422_problem_that_echoes_nothing(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="shared.observability.problems"):
        response = await client.post("/holds/h-1")

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert response.json() == {
        "type": "https://imt.example/problems/validation",
        "title": "Invalid characters",
        "status": 422,
        "detail": "Some text holds characters that cannot be stored.",
    }
    [record] = [r for r in caplog.records if r.name == "shared.observability.problems"]
    # Logged by class and route template: neither the value nor the raw path.
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        "unstorable value (CharacterNotInRepertoireError) in POST /holds/{hold_id}"
    )
    assert record.exc_info is None
    assert "jane" not in caplog.text


async def test_any_other_value_the_database_cannot_take_is_a_422_too(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="shared.observability.problems"):
        response = await client.post("/dates")

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    body = response.json()
    assert body["type"] == "https://imt.example/problems/validation"
    assert body["title"] == "Invalid value"
    assert "jane" not in response.text
    assert "jane" not in caplog.text
    assert "unhandled" not in caplog.text  # not the 500 path
