"""Every error is an RFC 9457 problem, and none echoes input or exception text."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel, Field

from shared.observability import PROBLEM_CONTENT_TYPE, Problem, install_problem_handlers
from tests.unit.observability.conftest import client_for

SECRET = "hunter2-secret"


class SignUp(BaseModel):
    email: str
    password: str = Field(min_length=20)
    age: int


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)

    @app.post("/signups")
    async def sign_up(body: SignUp) -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/conflict")
    async def conflict() -> None:
        raise Problem(
            409,
            "Email already registered",
            "Sign in or reset your password instead.",
            slug="email-taken",
            headers={"Retry-After": "0"},
        )

    @app.get("/missing")
    async def missing() -> None:
        raise HTTPException(404, "No such user")

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError(f"db said: password {SECRET} rejected for jane@example.com")

    return app


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(_app()) as client:
        yield client


async def test_validation_errors_list_fields_but_never_submitted_values(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/signups", json={"email": "jane@example.com", "password": SECRET, "age": SECRET}
    )

    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert SECRET not in response.text
    body = response.json()
    assert body["type"] == "https://imt.example/problems/validation"
    assert body["status"] == 422
    assert {e["location"] for e in body["errors"]} == {"body.password", "body.age"}
    assert all(set(e) == {"location", "message", "type"} for e in body["errors"])
    assert "jane@example.com" not in response.text


async def test_problem_raised_by_an_endpoint_is_its_body(client: httpx.AsyncClient) -> None:
    response = await client.get("/conflict")

    assert response.status_code == 409
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert response.headers["retry-after"] == "0"
    assert response.json() == {
        "type": "https://imt.example/problems/email-taken",
        "title": "Email already registered",
        "status": 409,
        "detail": "Sign in or reset your password instead.",
    }


async def test_http_exceptions_become_problems(client: httpx.AsyncClient) -> None:
    assert (await client.get("/missing")).json() == {
        "type": "about:blank",
        "title": "Not Found",
        "status": 404,
        "detail": "No such user",
    }
    unknown = await client.get("/nowhere/jane@example.com")
    assert unknown.status_code == 404
    assert unknown.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert unknown.json() == {"type": "about:blank", "title": "Not Found", "status": 404}
    not_allowed = await client.delete("/conflict")
    assert not_allowed.status_code == 405
    assert not_allowed.headers["allow"] == "GET"


async def test_unknown_errors_are_a_generic_500_logged_with_traceback(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="shared.observability.problems"):
        response = await client.get("/boom")

    assert response.status_code == 500
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert response.json() == {
        "type": "about:blank",
        "title": "Internal Server Error",
        "status": 500,
        "detail": "An unexpected error occurred.",
    }
    assert SECRET not in response.text
    assert "RuntimeError" not in response.text
    [record] = [r for r in caplog.records if r.name == "shared.observability.problems"]
    assert record.getMessage() == "unhandled RuntimeError in GET /boom"
    assert record.exc_info is not None


def test_problem_defaults() -> None:
    problem = Problem(429)
    assert problem.body() == {"type": "about:blank", "title": "Too Many Requests", "status": 429}
    assert Problem(400, type="https://example.org/x").type == "https://example.org/x"
