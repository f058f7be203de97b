"""Schemathesis over the accounts OpenAPI, through the gateway: no input makes a 5xx,
and every 4xx is a problem body (tests/support/openapi_fuzz.py)."""

from __future__ import annotations

import re

import httpx
import pytest

from tests.e2e.accounts.support import API, BusTail, Operator, active_user, new_operator
from tests.support.openapi_fuzz import Route, fuzz_all

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


def _excluded(route: Route) -> bool:
    method, path = route
    return re.match(EXCLUDED, path) is not None and method in ("POST", "DELETE")


def _who(route: Route) -> str:
    return "operator" if route[1].startswith(f"{API}/operator/") else "user"


def test_no_input_makes_a_server_error(platform: str, tokens: dict[str, dict[str, str]]) -> None:
    # The whole document (operators' endpoints too), served to operators' networks only.
    tested = fuzz_all(
        f"{platform}{API}/operator/openapi.json",
        platform,
        lambda route: tokens[_who(route)],
        excluded=_excluded,
    )
    assert len(tested) >= 35
