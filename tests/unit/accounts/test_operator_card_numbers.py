"""P-09 on the operator API: text an operator types that is stored in clear, published or
written into audit rows (policy versions and summaries, recipients' names and purposes,
unlock reasons), and an email address anyone gives (sign-up, guardian, an operator's
change, a new operator identity; an address may be all digits before the @), is
refused with 422 card-number when it holds a card number, before the database is
reached. The routes run in-process against a context whose database answers 503
"store-reached", so a clean body shows where the refusal would have been."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from services.accounts.routes import auth, operators
from tests.unit.accounts.offline_api import offline_client, operator_headers

CARD = "4111 1111 1111 1111"  # Luhn-valid


def _client() -> httpx.AsyncClient:
    return offline_client(operators.router, auth.router)


_as = operator_headers


POLICY = {"version": "v9", "summary": "We clarified retention periods."}
RECIPIENT = {
    "name": "Acme",
    "kind": "partner",
    "purpose": "newsletter",
    "allowed_fields": ["email"],
}
UNLOCK = {"reason": "the operator asked by phone"}
SOMEONE = uuid.uuid4()
SIGN_UP = {"name": "Ann", "email": "ann@example.com", "password": "pw-long-enough-1"}
CHILD = {**SIGN_UP, "birth_date": "2018-01-01", "guardian_email": "mum@example.com"}
CHANGE = {"email": "ann@example.com", "request_reference": "TCK-1", "purpose": "her request"}
DIGITS = CARD.replace(" ", "")
OPERATOR = {"email": "op@example.com", "password": "pw-long-enough-1", "roles": ["support"]}

CASES = [
    ("privacy_officer", "/operator/policy-versions", POLICY, "summary", f"Card {CARD} ok"),
    ("privacy_officer", "/operator/policy-versions", POLICY, "version", CARD.replace(" ", "")),
    ("admin", "/operator/recipients", RECIPIENT, "name", f"Acme {CARD}"),
    ("admin", "/operator/recipients", RECIPIENT, "purpose", f"ads_{CARD.replace(' ', '')}"),
    ("admin", f"/operator/operators/{SOMEONE}/unlock", UNLOCK, "reason", f"asked, card {CARD}"),
    (None, "/users", SIGN_UP, "email", f"{DIGITS}@example.com"),
    (None, "/users", CHILD, "guardian_email", f"{CARD.replace(' ', '-')}@example.com"),
    ("support", f"PATCH /operator/users/{SOMEONE}", CHANGE, "email", f"{DIGITS}@example.com"),
    ("admin", "/operator/operators", OPERATOR, "email", f"{DIGITS}@example.com"),
    # Kept for good in the audit log; a reference may hold ":" (its groups' separator).
    ("support", f"PATCH /operator/users/{SOMEONE}", CHANGE, "request_reference",
     CARD.replace(" ", ":")),
]  # fmt: skip


@pytest.mark.promise("P-09")
@pytest.mark.parametrize(("role", "path", "body", "field", "text"), CASES)
async def test_a_card_number_in_operator_text_is_refused_before_storage(
    role: str | None, path: str, body: dict[str, Any], field: str, text: str
) -> None:
    method, _, path = path.rpartition(" ")
    headers = _as(role) if role else {}
    async with _client() as client:
        clean = await client.request(method or "POST", path, json=body, headers=headers)
        assert clean.status_code == 503, clean.text  # the same body, clean, reaches the store
        refused = await client.request(
            method or "POST", path, json={**body, field: text}, headers=headers
        )
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["type"].endswith("/card-number")
    assert [e["location"] for e in problem["errors"]] == [f"body.{field}"]
    assert CARD not in refused.text  # never echoed
    assert CARD.replace(" ", "") not in refused.text


# A title becomes an email subject: one the notifier's gate would refuse is refused here,
# so the operator hears of it now (P-28), not every user's email later.
ANNOUNCEMENT = {"title": "New opening hours", "message": "We open at 9 from Monday."}
INCIDENT = {"title": "Stolen laptop", "message": "Reset your password.", "audience": "all"}


@pytest.mark.promise("P-28")
@pytest.mark.parametrize(
    ("role", "path", "body", "title", "reason"),
    [
        ("support", "/operator/announcements", ANNOUNCEMENT, "Action required: update",
         "urgency outside a security notice"),
        ("support", "/operator/announcements", ANNOUNCEMENT, "Ｒｅ: opening hours",  # noqa: RUF001
         "fake reply or forward prefix"),
        ("support", "/operator/announcements", ANNOUNCEMENT, "Free screen checks",
         "free offer not in the body"),
        ("privacy_officer", "/operator/incidents", INCIDENT, "You have won a prize",
         "prize or winnings claim"),
    ],
)  # fmt: skip
async def test_a_title_the_email_gate_would_refuse_is_refused_when_typed(
    role: str, path: str, body: dict[str, Any], title: str, reason: str
) -> None:
    async with _client() as client:
        clean = await client.post(path, json=body, headers=_as(role))
        assert clean.status_code == 503, clean.text  # the clean title reaches the store
        refused = await client.post(path, json={**body, "title": title}, headers=_as(role))
    assert refused.status_code == 422, refused.text
    assert refused.json()["type"].endswith("/misleading-title")
    assert [e["message"] for e in refused.json()["errors"]] == [f"misleading subject: {reason}"]


# What the notifier's gate refuses as a link to a host not ours is refused when typed
# (P-21): a breach notice found refused later would reach no one.
@pytest.mark.promise("P-21")
@pytest.mark.parametrize(
    ("role", "path", "body", "field", "text", "named"),
    [
        ("support", "/operator/announcements", ANNOUNCEMENT, "message",
         "Book at deals.example.com/spring today.", "deals.example.com"),
        ("privacy_officer", "/operator/incidents", INCIDENT, "message",
         "Questions? imt-support.help answers.", "imt-support.help"),
        ("privacy_officer", "/operator/incidents", INCIDENT, "title",
         "Phishing from www.imt-help.net", "www.imt-help.net"),
        ("privacy_officer", "/operator/policy-versions", POLICY, "summary",
         "Read it at https://evil.example\\@phonedoctorbiz.com/policy", "?"),
    ],
)  # fmt: skip
async def test_a_notice_linking_outside_our_sites_is_refused_when_typed(
    role: str, path: str, body: dict[str, Any], field: str, text: str, named: str
) -> None:
    # Our own site, and words no mail client makes a link of, reach the store.
    ours = {
        **body,
        field: f"{body[field]} See https://www.phonedoctorbiz.com/privacy, report.pdf, v2.1.",
    }
    async with _client() as client:
        clean = await client.post(path, json=ours, headers=_as(role))
        refused = await client.post(path, json={**body, field: text}, headers=_as(role))
    assert clean.status_code == 503, clean.text  # a link to our own site reaches the store
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["type"].endswith("/foreign-link")
    assert problem["errors"] == [
        {"location": f"body.{field}", "message": f"links to {named}", "type": "foreign_link"}
    ]


async def test_urgency_is_a_security_notices_to_use_and_titles_leave_room_for_a_prefix() -> None:
    urgent = {**INCIDENT, "title": "Urgent: reset your password"}
    async with _client() as client:
        allowed = await client.post("/operator/incidents", json=urgent, headers=_as("admin"))
        long = {**INCIDENT, "title": "x" * 121}
        too_long = await client.post("/operator/incidents", json=long, headers=_as("admin"))
    assert allowed.status_code == 503, allowed.text  # the email says it too: allowed
    assert too_long.status_code == 422


# A date to come whenever the test runs (a policy effective in the past is refused).
_IN_FIVE_YEARS = f"{datetime.now(UTC).year + 5}-01-01"


async def test_a_policy_date_without_a_time_zone_is_a_422_not_a_500() -> None:
    async with _client() as client:
        naive = await client.post(
            "/operator/policy-versions",
            json={**POLICY, "effective_at": f"{_IN_FIVE_YEARS}T00:00:00"},
            headers=_as("privacy_officer"),
        )
        aware = await client.post(
            "/operator/policy-versions",
            json={**POLICY, "effective_at": f"{_IN_FIVE_YEARS}T00:00:00Z"},
            headers=_as("privacy_officer"),
        )
    assert naive.status_code == 422, naive.text
    assert aware.status_code == 503, aware.text  # a real instant reaches the store


@pytest.mark.promise("P-09")
@pytest.mark.parametrize("key", [DIGITS, CARD.replace(" ", ":"), f"retry-{CARD.replace(' ', '-')}"])
async def test_an_idempotency_key_holding_a_card_number_is_refused_before_storage(
    key: str,
) -> None:
    """The key is stored as sent for a day (idempotency_keys): one holding a card number
    is refused, so the client sends a fresh random one instead."""
    async with _client() as client:
        clean = await client.post(
            "/operator/announcements", json=ANNOUNCEMENT, headers={
                **_as("support"), "Idempotency-Key": "k-" + uuid.uuid4().hex},
        )  # fmt: skip
        assert clean.status_code == 503, clean.text  # a random key reaches the store
        refused = await client.post(
            "/operator/announcements", json=ANNOUNCEMENT,
            headers={**_as("support"), "Idempotency-Key": key},
        )  # fmt: skip
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["type"].endswith("/card-number")
    assert [e["location"] for e in problem["errors"]] == ["header.Idempotency-Key"]
    assert DIGITS not in refused.text  # never echoed
    assert key not in refused.text
