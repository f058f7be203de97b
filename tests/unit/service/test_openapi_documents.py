"""The public OpenAPI document leaves out operators' endpoints; the whole one, under the
operators' prefix (which the gateway serves to operators' networks only), has them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from fastapi import APIRouter
from pydantic import BaseModel

from deploy.local import gateway
from shared.service.api import public_openapi
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
