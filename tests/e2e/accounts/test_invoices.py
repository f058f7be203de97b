"""Repair invoices: recorded by operators, seen by their user, and on erasure kept
anonymised for the financial_records category, then erased by the release (P-13; the
whole lifecycle through the deletion service is in tests/e2e/deletion)."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx

from shared.config import PlatformSettings
from tests.e2e.accounts.support import (
    API,
    INVOICE,
    BusTail,
    Operator,
    active_user,
    erase_subject,
    new_operator,
    record_invoice,
    unique,
)

CARD = "4111 1111 1111 1111"


async def test_operators_record_invoices_users_see_them_and_bad_ones_are_refused(
    client: httpx.AsyncClient, bus: BusTail, root: Operator, db: asyncpg.Connection
) -> None:
    user = await active_user(client, bus)
    support = await new_operator(client, root, "support")
    invoice = await record_invoice(client, support, user.id, amount="79.5", currency="GBP")
    assert invoice["amount"] == "79.50"
    mine = await client.get(f"{API}/me/invoices", headers=user.headers)
    assert mine.status_code == 200
    assert mine.json() == [invoice]
    other = await active_user(client, bus)
    assert (await client.get(f"{API}/me/invoices", headers=other.headers)).json() == []

    # The audit row says an invoice was recorded, never which one.
    audit = await db.fetchrow(
        "SELECT * FROM audit_log WHERE operator_id = $1 AND subject_id = $2",
        uuid.UUID(support.id),
        uuid.UUID(user.id),
    )
    assert audit is not None
    assert (audit["action"], list(audit["fields"])) == ("change", ["invoices"])
    assert invoice["number"] not in str(dict(audit))

    url = f"{API}/operator/users/{user.id}/invoices"
    base = {**INVOICE, "repair_reference": "RPR-1", "provider_reference": "pi_1"}
    refused: list[tuple[dict[str, Any], int]] = [
        ({"amount": "0"}, 422),
        ({"amount": "-12.00"}, 422),
        ({"amount": "12.345"}, 422),  # EUR has 2 decimal places
        ({"currency": "EUX"}, 422),
        ({"currency": "eur"}, 422),
        ({"issued_on": "2999-01-01"}, 422),
        ({"description": f"paid with {CARD}"}, 422),
        ({"provider_reference": CARD.replace(" ", "")}, 422),
        ({"number": invoice["number"]}, 409),
    ]
    for change, expected in refused:
        body = {"number": unique("INV"), **base, **change}
        response = await client.post(url, json=body, headers=support.headers)
        assert response.status_code == expected, (change, response.text)
        assert CARD not in response.text
        assert CARD.replace(" ", "") not in response.text
    card = await client.post(
        url, json={"number": unique("INV"), **base, "description": CARD}, headers=support.headers
    )
    assert card.json()["errors"][0]["location"] == "body.description"
    assert (
        await db.fetchval("SELECT count(*) FROM invoices WHERE user_id = $1", uuid.UUID(user.id))
        == 1
    )

    unknown = await client.post(
        f"{API}/operator/users/{uuid.uuid4()}/invoices",
        json={"number": unique("INV"), **base},
        headers=support.headers,
    )
    assert unknown.status_code == 404


async def test_erasure_keeps_invoices_anonymised_and_the_release_erases_them(
    client: httpx.AsyncClient,
    bus: BusTail,
    root: Operator,
    db: asyncpg.Connection,
    settings: PlatformSettings,
) -> None:
    user, bystander = await active_user(client, bus), await active_user(client, bus)
    kept = [
        await record_invoice(client, root, user.id, description=f"Battery for {user.name}"),
        await record_invoice(client, root, user.id, amount="15000", currency="JPY"),
    ]
    untouched = await record_invoice(client, root, bystander.id)
    uid = uuid.UUID(user.id)
    asked = await client.post(
        f"{API}/me/deletion-requests", json={"password": user.password}, headers=user.headers
    )
    assert asked.status_code == 202, asked.text  # the proof of it is a disclosure_log row
    cancelled = await client.post(  # no real erasure runs beside the commands below
        f"{API}/me/deletion-requests/{asked.json()['id']}/cancel", headers=user.headers
    )
    assert cancelled.status_code == 200, cancelled.text
    retain = ("security_audit", "financial_records", "disclosure_log")

    first = await erase_subject(settings, bus, user.id, retain)
    assert first["retained_anonymised"]["invoices"] == 2
    assert first["retained_anonymised"]["deletion_requests"] == 1
    assert "invoices" not in first["erased"]
    assert first["erased"]["users"] == 1
    rows = await db.fetch(
        "SELECT * FROM invoices WHERE id = ANY($1::uuid[]) ORDER BY number",
        [uuid.UUID(i["id"]) for i in kept],
    )
    assert len(rows) == 2
    keys = {r["retention_key"] for r in rows}
    assert len(keys) == 1  # one random key for the subject's invoices
    assert None not in keys
    assert uid not in keys
    for row in rows:
        assert row["user_id"] is None
        assert row["description"] is None
        text = str(dict(row))
        for personal in (user.id, user.email, user.name):
            assert personal not in text
    by_number = {r["number"]: r for r in rows}
    for invoice in kept:  # what the books need stays exact
        row = by_number[invoice["number"]]
        assert (str(row["issued_on"]), row["currency"]) == (
            invoice["issued_on"],
            invoice["currency"],
        )
        assert row["amount"] == type(row["amount"])(invoice["amount"])
        assert (row["repair_reference"], row["provider_reference"]) == (
            invoice["repair_reference"],
            invoice["provider_reference"],
        )
    assert (
        await db.fetchval(
            "SELECT count(*) FROM retention_keys WHERE retention_key = ANY($1::uuid[])", list(keys)
        )
        == 1
    )
    # The deletion service resends: nothing more changes, the same count is kept.
    again = await erase_subject(settings, bus, user.id, retain)
    assert again["retained_anonymised"]["invoices"] == 2
    assert {r["retention_key"] for r in await db.fetch(
        "SELECT retention_key FROM invoices WHERE id = ANY($1::uuid[])",
        [uuid.UUID(i["id"]) for i in kept],
    )} == keys  # fmt: skip

    # The period ends: the release (financial_records no longer retained) erases them.
    release = await erase_subject(settings, bus, user.id, ("security_audit",))
    assert release["erased"]["invoices"] == 2
    assert "invoices" not in release["retained_anonymised"]
    # disclosure_log's period ended with it here: its rows go too (the audit log stays).
    assert release["erased"]["deletion_requests"] == 1
    assert "deletion_requests" not in release["retained_anonymised"]
    assert "audit_log" in release["retained_anonymised"]
    count = "SELECT count(*) FROM deletion_requests WHERE user_id = $1"
    assert await db.fetchval(count, uid) == 0
    assert (
        await db.fetchval(
            "SELECT count(*) FROM invoices WHERE id = ANY($1::uuid[])",
            [uuid.UUID(i["id"]) for i in kept],
        )
        == 0
    )
    assert (
        await db.fetchval(
            "SELECT count(*) FROM retention_keys WHERE retention_key = ANY($1::uuid[])", list(keys)
        )
        == 0
    )
    mine = await client.get(f"{API}/me/invoices", headers=bystander.headers)
    assert [i["id"] for i in mine.json()] == [untouched["id"]]
