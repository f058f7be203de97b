"""A policy version's effective date and an announcement's send time are at most five
years ahead: a date at the end of time is refused with 422 before the database is reached
(past 9999 in UTC it cannot be stored; a policy version in 9999 would make every later
one "out of order" for good)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx
import pytest
from pydantic import ValidationError

from services.accounts.routes import operators
from services.accounts.routes.operators import (
    SCHEDULE_HORIZON,
    AnnouncementIn,
    PolicyIn,
    within_horizon,
)
from tests.unit.accounts.offline_api import offline_client, operator_headers

MODELS: list[tuple[Any, str]] = [(PolicyIn, "effective_at"), (AnnouncementIn, "send_at")]
END_OF_TIME = ["9999-12-31T23:59:59Z", "9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"]


def test_a_date_within_the_horizon_is_kept_as_given() -> None:
    soon = datetime.now(timezone(timedelta(hours=-5))) + timedelta(days=30)
    assert within_horizon(soon) is soon
    near_edge = datetime.now(UTC) + SCHEDULE_HORIZON - timedelta(minutes=1)
    assert within_horizon(near_edge) == near_edge
    past = datetime(2020, 1, 1, tzinfo=UTC)  # the routes judge past dates themselves
    assert within_horizon(past) == past


def test_a_date_past_the_horizon_is_refused() -> None:
    with pytest.raises(ValueError, match="at most 5 years from now"):
        within_horizon(datetime.now(UTC) + SCHEDULE_HORIZON + timedelta(minutes=1))


def test_a_date_that_overflows_in_utc_is_refused_not_raised() -> None:
    # -14:00 at the last second of 9999 is in the year 10000 in UTC: OverflowError.
    late = datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-14)))
    early = datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=14)))
    for value in (late, early):
        with pytest.raises(ValueError, match="out of range"):
            within_horizon(value)


@pytest.mark.parametrize("value", END_OF_TIME)
@pytest.mark.parametrize(("model", "field"), MODELS)
def test_the_models_refuse_the_end_of_time(model: Any, field: str, value: str) -> None:
    body = {"version": "v1", "summary": "s", "title": "t", "message": "m", field: value}
    with pytest.raises(ValidationError) as refused:
        model.model_validate(body)
    assert [e["loc"] for e in refused.value.errors()] == [(field,)]


@pytest.mark.parametrize(("model", "field"), MODELS)
def test_the_models_still_take_none_and_a_near_date(model: Any, field: str) -> None:
    body = {"version": "v1", "summary": "s", "title": "t", "message": "m"}
    assert getattr(model.model_validate(body), field) is None
    soon = (datetime.now(UTC) + timedelta(days=7)).isoformat()
    assert getattr(model.model_validate({**body, field: soon}), field) is not None


def _client() -> httpx.AsyncClient:
    return offline_client(operators.router)


_as = operator_headers


ROUTES = [
    ("/operator/policy-versions", {"version": "v9", "summary": "Clarified."}, "effective_at"),
    ("/operator/announcements", {"title": "Opening hours", "message": "9 am."}, "send_at"),
]


@pytest.mark.parametrize("value", END_OF_TIME)
@pytest.mark.parametrize(("path", "body", "field"), ROUTES)
async def test_the_routes_answer_422_before_the_store(
    path: str, body: dict[str, Any], field: str, value: str
) -> None:
    soon = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    async with _client() as client:
        clean = await client.post(path, json={**body, field: soon}, headers=_as("admin"))
        assert clean.status_code == 503, clean.text  # a near date reaches the store
        refused = await client.post(path, json={**body, field: value}, headers=_as("admin"))
    assert refused.status_code == 422, refused.text
    assert refused.headers["content-type"] == "application/problem+json"
    problem = refused.json()
    assert problem["type"].endswith("/validation")
    assert [e["location"] for e in problem["errors"]] == [f"body.{field}"]
