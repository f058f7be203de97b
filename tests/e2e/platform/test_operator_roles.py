"""P-07 beyond accounts: every operator endpoint of the other services answers exactly
the roles it names, to real operators created and logged in through accounts.

Writes go with a body that fails validation: an allowed role reaches it (422, nothing
changes) and a refused one is stopped before (403). Users' tokens get 403, no token 401.
"""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from tests.e2e.accounts.support import admin, new_operator
from tests.e2e.deletion.support import needs_every_service, token_headers
from tests.support.operator_routes import operator_routes, template_matches

ROLES = ("support", "privacy_officer", "analyst", "admin")
NOTIFIER, DELETION, ANALYTICS = "/api/notifier/ops", "/api/deletion/operator", "/api/analytics"
SOMEONE = uuid.uuid4()
INVALID = {"delivery_ids": "not a list"}  # fails validation wherever a body is read

Call = tuple[str, str, dict[str, Any] | None, dict[str, str] | None]
CALLS: dict[str, tuple[Call, set[str]]] = {
    "notifier: notices": (("GET", f"{NOTIFIER}/notices", None, None),
                          {"support", "privacy_officer", "admin"}),
    "notifier: one notice": (("GET", f"{NOTIFIER}/notices/{SOMEONE}", None, None),
                             {"support", "privacy_officer", "admin"}),
    "notifier: dead letters": (("GET", f"{NOTIFIER}/dead-letters", None, None),
                               {"support", "privacy_officer", "admin"}),
    "notifier: replay": (("POST", f"{NOTIFIER}/dead-letters/replay", INVALID, None),
                         {"support", "privacy_officer", "admin"}),
    "notifier: suppress all mail": (("POST", f"{NOTIFIER}/suppressions", INVALID, None),
                                    {"support", "privacy_officer", "admin"}),
    "notifier: suppressions recorded": (("GET", f"{NOTIFIER}/suppressions", None, None),
                                        {"support", "privacy_officer", "admin"}),
    "notifier: policy reach": (("GET", f"{NOTIFIER}/policy-versions/v0", None, None),
                               {"support", "privacy_officer", "admin"}),
    "deletion: pipeline": (("GET", f"{DELETION}/pipeline", None, None),
                           {"privacy_officer", "admin"}),
    "deletion: one request": (("GET", f"{DELETION}/requests/{SOMEONE}", None, None),
                              {"privacy_officer", "admin"}),
    "deletion: place hold": (("POST", f"{DELETION}/requests/{SOMEONE}/hold", INVALID, None),
                             {"privacy_officer", "admin"}),
    "deletion: lift hold": (("DELETE", f"{DELETION}/requests/{SOMEONE}/hold", None, None),
                            {"privacy_officer", "admin"}),
    "deletion: retry": (("POST", f"{DELETION}/requests/{SOMEONE}/retry", None, None),
                        {"privacy_officer", "admin"}),
    "deletion: verify": (("POST", f"{DELETION}/requests/{SOMEONE}/verify", None, None),
                         {"privacy_officer", "admin"}),
    "analytics: trends": (("GET", f"{ANALYTICS}/trends", None, {"site": "x.example"}),
                          {"analyst", "admin"}),
    "analytics: partner trends": (("GET", f"{ANALYTICS}/trends/partner", None,
                                   {"site": "x.example"}), {"analyst", "admin"}),
    "analytics: dropped visits": (("GET", f"{ANALYTICS}/suppressed", None, None),
                                  {"analyst", "admin"}),
}  # fmt: skip


@pytest.mark.parametrize("service", ["notifier", "deletion", "analytics"])
def test_the_matrix_calls_every_operator_route_of_the_service(service: str) -> None:
    """Every route of the service's API that admits operators by role (require_roles, as
    the app is built) is called by the matrix below: one added later fails here until
    its line, with the roles it must admit, is added."""
    routes = operator_routes(service)
    assert routes, f"no operator route found in {service}: the search is broken"
    called = [(method, path) for (method, path, _, _), _ in CALLS.values()]
    missing = [
        f"{method} {template} (admits {', '.join(sorted(roles))})"
        for (method, template), roles in sorted(routes.items())
        if not any(m == method and template_matches(template, p) for m, p in called)
    ]
    assert not missing, f"operator routes the matrix never calls: {missing}"


@pytest.mark.promise("P-07")
async def test_each_role_opens_exactly_its_endpoints_in_every_service(platform: str) -> None:
    needs_every_service()
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        root = await admin(client)
        operators = {role: await new_operator(client, root, role) for role in ROLES}
        granted: dict[str, set[str]] = {name: set() for name in CALLS}
        for name, ((method, path, body, params), _) in CALLS.items():
            for role, operator in operators.items():
                response = await client.request(
                    method, path, json=body, params=params, headers=operator.headers
                )
                assert response.status_code != 401, (role, name)
                assert response.status_code < 500, (role, name, response.text)
                if response.status_code == 403:
                    assert response.headers["content-type"].startswith("application/problem")
                else:
                    granted[name].add(role)
            as_user = await client.request(
                method, path, json=body, params=params, headers=token_headers(uuid.uuid4())
            )
            assert as_user.status_code == 403, (name, as_user.text)
            anonymous = await client.request(method, path, json=body, params=params)
            assert anonymous.status_code == 401, (name, anonymous.text)
    assert granted == {name: roles for name, (_, roles) in CALLS.items()}
