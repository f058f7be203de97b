"""The public OpenAPI document leaves out operators' endpoints; the whole one, under the
operators' prefix (which the gateway serves to operators' networks only), has them."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import APIRouter
from pydantic import BaseModel

from deploy.local import gateway
from shared.service.answers import Answer, Timestamp
from shared.service.api import public_openapi
from shared.service.problem_docs import ProblemDetails, document_problems
from tests.unit.service.demo_api import PREFIX, demo_client

DOCS = Path(__file__).resolve().parents[3] / "docs" / "api"


class Part(BaseModel):
    model: str


class Shown(BaseModel):
    name: str
    device: Part  # reached through Shown only


class OperatorsOnly(BaseModel):
    reason: str


def _router() -> APIRouter:
    router = APIRouter()

    @router.get("/me")
    async def me(full: bool = False) -> Shown:  # a parameter: its 422 is described
        return Shown(name="", device=Part(model=""))

    @router.post("/operator/users")
    async def users(body: OperatorsOnly) -> Shown:
        return Shown(name="", device=Part(model=""))

    @router.get("/ops/suppressions")
    async def suppressions() -> dict[str, str]:
        return {}

    @router.get("/operatorial")  # a prefix of the word, not of the path
    async def operatorial() -> dict[str, str]:
        return {}

    return router


async def test_the_public_document_lists_only_what_anyone_may_call() -> None:
    async with demo_client(_router()) as client:
        public = await client.get(f"{PREFIX}/openapi.json")
        whole = await client.get(f"{PREFIX}/operator/openapi.json")
    assert public.status_code == whole.status_code == 200
    assert set(public.json()["paths"]) == {f"{PREFIX}/me", f"{PREFIX}/operatorial"}
    assert set(whole.json()["paths"]) == {
        f"{PREFIX}/me",
        f"{PREFIX}/operatorial",
        f"{PREFIX}/operator/users",
        f"{PREFIX}/ops/suppressions",
    }
    schemas = whole.json()["components"]["schemas"]
    assert {"Shown", "Part", "OperatorsOnly"} <= set(schemas)
    assert set(public.json()["components"]["schemas"]) == set(schemas) - {"OperatorsOnly"}


@pytest.mark.parametrize("service", ["accounts", "analytics", "deletion", "notifier"])
def test_what_the_gateway_keeps_for_operators_is_not_in_the_public_document(
    service: str,
) -> None:
    """Every path the gateway serves to operators' networks alone (an operators' prefix,
    or the analysts' views) is left out of the public document; the rest stays."""
    whole = json.loads((DOCS / f"{service}.openapi.json").read_text())
    public = public_openapi(whole, f"/api/{service}")
    operators = re.compile(rf"^/api/{service}/+{gateway.OPERATOR_PATHS}")
    analysts = gateway.ANALYST_PATHS.get(service)
    kept_for_operators = {
        path
        for path in whole["paths"]
        if operators.match(path) or (analysts and re.match(analysts, path))
    }
    assert kept_for_operators, "the operators' paths were not found: the test is blind"
    assert not kept_for_operators & set(public["paths"])
    assert set(public["paths"]) == set(whole["paths"]) - kept_for_operators


PROBLEM = {"application/problem+json": {"schema": {"$ref": "#/components/schemas/ProblemDetails"}}}


async def test_errors_are_documented_as_the_problem_bodies_they_are() -> None:
    """The document declares every error as a problem details body, not FastAPI's 422
    shape (a ``detail`` list no route answers); and what a route answers fits it."""
    async with demo_client(_router()) as client:
        document = (await client.get(f"{PREFIX}/operator/openapi.json")).json()
        refused = await client.get(f"{PREFIX}/me", params={"full": "maybe"})
    assert "HTTPValidationError" not in json.dumps(document)
    me = document["paths"][f"{PREFIX}/me"]["get"]["responses"]
    assert {code: me[code]["content"] for code in ("422", "4XX", "5XX")} == dict.fromkeys(
        ("422", "4XX", "5XX"), PROBLEM
    )
    assert me["422"]["description"].startswith("Some part of the request is missing")
    assert "422" not in document["paths"][f"{PREFIX}/operatorial"]["get"]["responses"]
    assert refused.status_code == 422
    assert refused.headers["content-type"] == "application/problem+json"
    body = ProblemDetails.model_validate_json(refused.content)
    assert body.errors is not None
    assert [e.location for e in body.errors] == ["query.full"]
    # The schema is the model's: a body that lacks a member it requires does not fit.
    schema = document["components"]["schemas"]["ProblemDetails"]
    assert set(schema["required"]) == {"type", "title", "status"}
    assert document["components"]["schemas"]["FieldError"]["required"] == [
        "location", "message", "type",
    ]  # fmt: skip


@pytest.mark.parametrize("service", ["accounts", "analytics", "deletion", "notifier"])
def test_every_operation_of_a_service_declares_its_errors_as_problems(service: str) -> None:
    whole = json.loads((DOCS / f"{service}.openapi.json").read_text())
    operations = [op for item in whole["paths"].values() for op in item.values()]
    assert operations
    for operation in operations:
        responses = operation["responses"]
        errors = {code: r for code, r in responses.items() if code[0] in "45"}
        assert {"4XX", "5XX"} <= set(errors), operation["operationId"]
        assert all(r["content"] == PROBLEM for r in errors.values()), operation["operationId"]
    assert not {"HTTPValidationError", "ValidationError"} & set(whole["components"]["schemas"])


def test_a_service_schema_named_as_the_problem_is_refused() -> None:
    document: dict[str, Any] = {"paths": {}, "components": {"schemas": {"FieldError": {}}}}
    with pytest.raises(ValueError, match="FieldError"):
        document_problems(document)


class Stamped(Answer):
    at: Timestamp
    note: str | None


async def test_an_answer_model_types_the_document_and_changes_no_byte_it_answers() -> None:
    """A route's dict goes out as it was written (a time keeps its +00:00), its model
    types the document, and a key the model does not name fails the route."""
    at = datetime(2026, 12, 2, 1, 2, 3, tzinfo=UTC).isoformat()
    router = APIRouter()

    @router.get("/stamped", response_model=Stamped)
    async def stamped() -> dict[str, Any]:
        return {"at": at, "note": None}

    @router.get("/stamped-at", response_model=Stamped)
    async def stamped_at() -> dict[str, Any]:
        return {"at": datetime.fromisoformat(at), "note": None}  # as FastAPI would write it

    @router.get("/drifted", response_model=Stamped)
    async def drifted() -> dict[str, Any]:
        return {"at": at, "note": None, "added_later": 1}

    async with demo_client(router) as client:
        answered = await client.get(f"{PREFIX}/stamped")
        refused = await client.get(f"{PREFIX}/drifted")
        from_datetime = await client.get(f"{PREFIX}/stamped-at")
        document = (await client.get(f"{PREFIX}/openapi.json")).json()
    assert answered.json() == {"at": "2026-12-02T01:02:03+00:00", "note": None}
    assert from_datetime.content == answered.content
    assert refused.status_code == 500
    assert document["components"]["schemas"]["Stamped"]["properties"]["at"] == {
        "format": "date-time", "title": "At", "type": "string",
    }  # fmt: skip
