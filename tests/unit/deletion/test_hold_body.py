"""A legal hold's reason is checked at the API's edge: a blank one is a 422 problem."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
import pytest
from fastapi import FastAPI
from pydantic import ValidationError

from services.deletion.routes import operators
from shared.auth import issue_token
from shared.config import DEV_TOKEN_PRIVATE_KEY, DEV_TOKEN_PUBLIC_KEY
from shared.observability import PROBLEM_CONTENT_TYPE, install_problem_handlers


def _app() -> FastAPI:
    app = FastAPI()
    install_problem_handlers(app)
    app.state.token_public_key = DEV_TOKEN_PUBLIC_KEY
    # The route never reaches its context here: the body is refused first.
    app.state.deletion = None
    app.include_router(operators.router)
    return app


def _officer() -> dict[str, str]:
    token = issue_token(
        DEV_TOKEN_PRIVATE_KEY, subject=str(uuid.uuid4()), session_id="s", kind="operator",
        ttl=timedelta(minutes=5), roles=("privacy_officer",),
    )  # fmt: skip
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("reason", ["     ", "\t\n ", " x ", "  ab  "])
def test_a_blank_or_short_reason_is_refused_once_stripped(reason: str) -> None:
    with pytest.raises(ValidationError, match="at least 3 characters"):
        operators.HoldBody(reason=reason)


def test_a_reason_is_kept_without_its_surrounding_blanks() -> None:
    assert operators.HoldBody(reason="  court order 12 \n").reason == "court order 12"


@pytest.mark.parametrize("reason", ["x", "     "])
async def test_the_hold_route_answers_a_blank_reason_with_a_422_problem(reason: str) -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(
            f"/operator/requests/{uuid.uuid4()}/hold", json={"reason": reason}, headers=_officer()
        )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert [e["location"] for e in response.json()["errors"]] == ["body.reason"]


# Python's str.strip, which the stage machine's check uses, takes the information
# separators (U+001C-U+001F) for blanks; pydantic's strip_whitespace does not: such a
# reason passed the model and was refused deeper down with a 500.
SEPARATORS = ["\x1f \x1f", "\x1c\x1d\x1e\x1f", " \x1fab\x1e "]


@pytest.mark.parametrize("reason", SEPARATORS)
def test_a_reason_blank_as_python_strips_it_is_refused(reason: str) -> None:
    with pytest.raises(ValidationError, match="at least 3 characters"):
        operators.HoldBody(reason=reason)


def test_a_reason_is_kept_without_surrounding_separators() -> None:
    assert operators.HoldBody(reason="\x1fcourt order 12\x1e").reason == "court order 12"


@pytest.mark.parametrize("reason", SEPARATORS)
async def test_the_hold_route_answers_a_reason_of_separators_with_a_422_problem(
    reason: str,
) -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await client.post(
            f"/operator/requests/{uuid.uuid4()}/hold", json={"reason": reason}, headers=_officer()
        )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert [e["location"] for e in response.json()["errors"]] == ["body.reason"]
