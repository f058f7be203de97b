"""Schemathesis over the accounts OpenAPI, through the gateway: no input makes a 5xx."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.generation.case import Case

from tests.e2e.accounts.support import API, BusTail, Operator, active_user, new_operator

# Writes that reach every user (the notifier would mail the whole shared stack) and the
# logout that would end the fuzzing session are left out; everything else is fuzzed.
EXCLUDED = r"^/api/accounts/(operator/(announcements|incidents|policy-versions)|sessions/current)$"


@pytest.fixture
async def tokens(
    client: httpx.AsyncClient, bus: BusTail, root: Operator
) -> dict[str, dict[str, str]]:
    user = await active_user(client, bus)
    officer = await new_operator(client, root, "privacy_officer", "support")
    return {"user": user.headers, "operator": officer.headers}


FUZZ = settings(
    max_examples=12,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _fuzz(operation: Any, platform: str, headers: dict[str, str]) -> None:
    @FUZZ
    @given(case=operation.as_strategy())
    def call(case: Case[Any]) -> None:
        response = case.call(base_url=platform, headers=headers)
        assert response.status_code < 500, (case.method, case.path, response.text[:300])

    call()


def test_no_input_makes_a_server_error(platform: str, tokens: dict[str, dict[str, str]]) -> None:
    # The whole document (operators' endpoints too), served to operators' networks only.
    schema = schemathesis.openapi.from_url(f"{platform}{API}/operator/openapi.json")
    tested = []
    for result in schema.get_all_operations():
        operation = result.ok()  # type: ignore[union-attr]
        if re.match(EXCLUDED, operation.path) and operation.method.upper() in ("POST", "DELETE"):
            continue
        who = "operator" if operation.path.startswith(f"{API}/operator/") else "user"
        _fuzz(operation, platform, tokens[who])
        tested.append(f"{operation.method.upper()} {operation.path}")
    assert len(tested) >= 35
