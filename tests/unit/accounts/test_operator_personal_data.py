"""P-14 on the operator API: what an operator states for the audit log (a purpose, a
request reference, an unlock reason) is kept for good in the hash chain, which no
erasure touches. Personal data in it is refused with 422 personal-data before the
store is reached, naming the field and never the value; a request reference is a code.
An answer never echoes what was sent: an unknown recipient field is named by position.
The routes run in-process against a context whose database answers 503 "store-reached"
(offline_api), so a clean request shows where the refusal would have been."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from services.accounts.routes import operators
from tests.unit.accounts.offline_api import offline_client, operator_headers

SOMEONE = uuid.uuid4()
EMAIL = "jane.doe@example.com"
PHONE = "+44 7700 900123"
CHANGE = {"name": "Ann", "request_reference": "TCK-1042", "purpose": "her emailed request"}
SEARCH = {"email": "ann@example.com", "purpose": "answering her ticket"}
UNLOCK = {"reason": "the operator asked by phone"}

BODIES = [
    ("support", "PATCH", f"/operator/users/{SOMEONE}", CHANGE, "purpose", f"asked by {EMAIL}"),
    ("support", "PATCH", f"/operator/users/{SOMEONE}", CHANGE, "purpose", f"call {PHONE}"),
    ("support", "POST", "/operator/users/search", SEARCH, "purpose", f"{EMAIL} wrote in"),
    ("admin", "POST", f"/operator/operators/{SOMEONE}/unlock", UNLOCK, "reason",
     f"confirmed on {PHONE}"),
    ("support", "POST", f"/operator/users/{SOMEONE}/deletion-requests",
     {"password": "operator-password", "reason": "the user asked in writing"}, "reason",
     f"asked from {EMAIL}"),
]  # fmt: skip


def _values_absent(text: str) -> None:
    for value in (EMAIL, PHONE, PHONE.replace(" ", "")):
        assert value not in text


@pytest.mark.promise("P-14")
@pytest.mark.parametrize(("role", "method", "path", "body", "field", "text"), BODIES)
async def test_personal_data_in_an_audited_statement_is_refused_before_storage(
    role: str, method: str, path: str, body: dict[str, Any], field: str, text: str
) -> None:
    async with offline_client(operators.router) as client:
        clean = await client.request(method, path, json=body, headers=operator_headers(role))
        assert clean.status_code == 503, clean.text  # the same body, clean, reaches the store
        refused = await client.request(
            method, path, json={**body, field: text}, headers=operator_headers(role)
        )
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["type"].endswith("/personal-data")
    assert [e["location"] for e in problem["errors"]] == [f"body.{field}"]
    _values_absent(refused.text)


@pytest.mark.promise("P-14")
@pytest.mark.parametrize("path", [f"/operator/users/{SOMEONE}", f"/operator/requests/{SOMEONE}"])
async def test_personal_data_in_a_read_purpose_is_refused_before_the_read(path: str) -> None:
    headers = operator_headers("support")
    async with offline_client(operators.router) as client:
        clean = await client.get(path, params={"purpose": "answering the ticket"}, headers=headers)
        assert clean.status_code == 503, clean.text
        refused = await client.get(path, params={"purpose": f"for {EMAIL}"}, headers=headers)
    assert refused.status_code == 422, refused.text
    assert refused.json()["type"].endswith("/personal-data")
    assert [e["location"] for e in refused.json()["errors"]] == ["query.purpose"]
    _values_absent(refused.text)


@pytest.mark.promise("P-14")
@pytest.mark.parametrize(
    "reference",
    [EMAIL, "Jane Doe's mail of Monday", "ticket 1042", "+447700900123", "0612345678-x" * 6],
)
async def test_a_request_reference_is_a_code_holding_no_personal_data(reference: str) -> None:
    path = f"/operator/users/{SOMEONE}"
    async with offline_client(operators.router) as client:
        refused = await client.patch(
            path, json={**CHANGE, "request_reference": reference},
            headers=operator_headers("support"),
        )  # fmt: skip
    assert refused.status_code == 422, refused.text
    assert [e["location"] for e in refused.json()["errors"]] == ["body.request_reference"]
    assert reference not in refused.text


async def test_a_phone_number_shaped_like_a_code_is_refused_as_personal_data() -> None:
    async with offline_client(operators.router) as client:
        refused = await client.patch(
            f"/operator/users/{SOMEONE}",
            json={**CHANGE, "request_reference": "212-555-0147"},
            headers=operator_headers("support"),
        )
    assert refused.status_code == 422, refused.text
    assert refused.json()["type"].endswith("/personal-data")
    assert "212-555-0147" not in refused.text


async def test_an_unknown_recipient_field_is_named_by_position_never_echoed() -> None:
    secret = "jane-doe-notes"
    body = {"name": "Acme", "kind": "partner", "purpose": "newsletter",
            "allowed_fields": ["email", secret, "locale", "Jane's birthday"]}  # fmt: skip
    async with offline_client(operators.router) as client:
        refused = await client.post(
            "/operator/recipients", json=body, headers=operator_headers("admin")
        )
    assert refused.status_code == 422, refused.text
    assert secret not in refused.text
    assert "Jane" not in refused.text
    assert [e["location"] for e in refused.json()["errors"]] == [
        "body.allowed_fields.1",
        "body.allowed_fields.3",
    ]


@pytest.mark.promise("P-14")
async def test_a_recipient_named_with_personal_data_is_refused() -> None:
    """A recipient's name goes into the purpose of every disclosure's audit row."""
    body = {"name": "Acme", "kind": "partner", "purpose": "newsletter",
            "allowed_fields": ["locale"]}  # fmt: skip
    async with offline_client(operators.router) as client:
        headers = operator_headers("admin")
        clean = await client.post("/operator/recipients", json=body, headers=headers)
        assert clean.status_code == 503, clean.text  # the same body, clean, reaches the store
        refused = await client.post(
            "/operator/recipients", json={**body, "name": f"Acme, contact {EMAIL}"}, headers=headers
        )
    assert refused.status_code == 422, refused.text
    assert [e["location"] for e in refused.json()["errors"]] == ["body.name"]
    _values_absent(refused.text)
