"""My export holds every field I gave that is still stored, as the schema has them (P-11).

The other export tests check a list of fields written by hand: a field or a table added
later is exported or not, and they cannot tell. Here the accounts database itself says
where the user is. A user fills in every form (profile, a new address, devices, a
request thread, consents, preferences, a policy acceptance, a deletion request then
cancelled), an operator adds an invoice and discloses them to a consented recipient;
then every table of the accounts database holding a row of theirs is found (any column
naming their id, and the rows hanging off those by a foreign key). Each such table is
either exported (each of its columns compared, row by row, with the export) or listed
below as not exported, with the reason; each of its columns is one or the other. A new
table or column holding user data fails this test until someone decides which."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from uuid import UUID

import asyncpg
import httpx
import pytest

from shared.vault import Vault
from tests.e2e.accounts.support import (
    API,
    BusTail,
    Operator,
    User,
    active_user,
    new_operator,
    publish_policy,
    record_invoice,
    unique,
    unique_email,
)
from tests.support.cards import card_vault

Items = Callable[[dict[str, Any]], list[dict[str, Any]]]


@dataclass(frozen=True)
class Exported:
    """A table whose rows of the user are in the export: ``items`` picks them out of it,
    ``key`` is the column matching a row to its item (``None``: in the order of the
    table's ``id``), ``shown`` the columns compared (column: field of the item, a dotted
    path) and ``kept_out`` the others, each with why it is not exported."""

    items: Items
    key: tuple[str, str] | None
    shown: dict[str, str]
    kept_out: dict[str, str] = field(default_factory=dict)


OWNER = "the user's own id (the export is theirs)"
STAFF = "an operator's id: iMT's staff, not the user's data"

EXPORTED: dict[str, Exported] = {
    "users": Exported(
        lambda e: [e["profile"]],
        ("id", "id"),
        {
            "id": "id",
            "name": "name",
            "email": "email",
            "birth_date": "birth_date",
            "guardian_email": "guardian_email",
            "pending_email": "pending_email",
            "pending_email_until": "pending_email_until",
            "age_band": "age_band",
            "email_verified": "email_verified",
            "active": "active",
            "locale": "locale",
            "marketing_email": "preferences.marketing_email",
            "personalisation": "preferences.personalisation",
            "tracking_opt_out": "preferences.tracking_opt_out",
            "created_at": "created_at",
        },
        {
            "email_index": "a keyed hash of the email, for look-ups (the email is exported)",
            "pending_email_index": "a keyed hash of the pending email (exported itself)",
            "password_hash": "a hash of the password: a secret, never shown",
            "guardian_consented": "the guardian's act, not the user's (shown as 'active')",
            "pending_change": "a random id of the pending address change, for its link",
            "login_locked": "security state of the account (P-08)",
            "updated_at": "when the row last changed: bookkeeping",
        },
    ),
    "devices": Exported(
        lambda e: e["devices"],
        ("id", "id"),
        {
            "id": "id",
            "model": "model",
            "damage_state": "damage_state",
            "created_at": "created_at",
            "updated_at": "updated_at",
        },
        {"user_id": OWNER},
    ),
    "requests": Exported(
        lambda e: e["requests"],
        ("id", "id"),
        {"id": "id", "category": "category", "status": "status", "created_at": "created_at"},
        {"user_id": OWNER},
    ),
    "request_messages": Exported(
        lambda e: [m for r in e["requests"] for m in r["messages"]],
        ("id", "id"),
        {"id": "id", "author": "author", "body": "text", "created_at": "created_at"},
        {"request_id": "the thread it is in: exported inside it", "operator_id": STAFF},
    ),
    "consents": Exported(
        lambda e: e["consents"],
        None,
        {"recipient_id": "recipient_id", "purpose": "purpose", "granted": "granted", "at": "at"},
        {"id": "the order of the changes: the export lists them in it", "user_id": OWNER},
    ),
    "policy_acceptances": Exported(
        lambda e: e["policy_acceptances"],
        ("version", "version"),
        {"version": "version", "accepted_at": "accepted_at"},
        {"user_id": OWNER},
    ),
    "deletion_requests": Exported(
        lambda e: e["deletion_requests"],
        ("id", "id"),
        {
            "id": "id",
            "status": "status",
            "initiated_by": "initiated_by",
            "created_at": "created_at",
            "updated_at": "updated_at",
        },
        {
            "user_id": OWNER,
            "requested_by": STAFF,
            "approved_by": STAFF,
            "reason": "an operator's reason for a deletion they asked for",
        },
    ),
    "invoices": Exported(
        lambda e: e["invoices"],
        ("id", "id"),
        {
            "id": "id",
            "number": "number",
            "amount": "amount",
            "currency": "currency",
            "issued_on": "issued_on",
            "repair_reference": "repair_reference",
            "payment_provider": "payment_provider",
            "provider_reference": "provider_reference",
            "description": "description",
        },
        {"user_id": OWNER, "retention_key": "set only when the user is erased (P-13)"},
    ),
    "disclosures": Exported(
        lambda e: e["disclosures"],
        None,
        {"at": "at", "fields": "fields"},
        {
            "id": "the order of the disclosures: the export lists them in it",
            "export_id": "the operator's export it was part of: iMT's bookkeeping",
            "recipient_id": "shown as the recipient's name and purpose",
            "operator_id": STAFF,
            "user_id": OWNER,
        },
    ),
    "erasing_items": Exported(
        lambda e: e["deleted_awaiting_erasure"],
        ("item_id", "id"),
        {"item_id": "id", "scope": "scope", "deleted_at": "deleted_at"},
        {"user_id": OWNER, "rows": "shown as the item's own fields (model, messages...)"},
    ),
}
# Tables that may hold a row of the user and are deliberately not in the export.
NOT_EXPORTED = {
    "sessions": "the user's sign-ins: security records the platform made (P-08)",
    "refresh_tokens": "hashes of the sessions' refresh tokens: secrets",
    "action_tokens": "hashes of the one-time links mailed to the user: secrets",
    "data_exports": "when the user exported: kept to rate-limit exports",
    "audit_log": "operators' reads and changes of the user's data: their record (P-07)",
    "recipient_erasures": "which recipients an erasure was forwarded to: ids and dates",
    "bus_outbox": "events about the user on their way to Kafka: emptied in seconds",
    "bus_outbox_rejected": "events the relay refused: operators' dead letters",
    "login_throttle": "failed sign-in counters under a keyed hash (P-08)",
}
# What the journey below fills in: found, or the search is broken.
FILLED = {
    "users", "devices", "requests", "request_messages", "consents", "policy_acceptances",
    "deletion_requests", "invoices", "disclosures", "sessions", "refresh_tokens",
    "action_tokens", "data_exports", "audit_log",
}  # fmt: skip

_COLUMNS = """
SELECT c.table_name, c.column_name, c.udt_name
FROM information_schema.columns c
JOIN information_schema.tables t USING (table_schema, table_name)
WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'
ORDER BY c.table_name, c.ordinal_position
"""
_FOREIGN_KEYS = """
SELECT conrelid::regclass::text AS child, confrelid::regclass::text AS parent,
       (SELECT attname FROM pg_attribute WHERE attrelid = conrelid AND attnum = conkey[1])
           AS child_column,
       (SELECT attname FROM pg_attribute WHERE attrelid = confrelid AND attnum = confkey[1])
           AS parent_column
FROM pg_constraint
WHERE contype = 'f' AND cardinality(conkey) = 1 AND connamespace = 'public'::regnamespace
"""


def _names_id(column: str, udt: str) -> str | None:
    """A condition on row ``t`` that ``column`` names the id ``$1`` (as the deletion
    verifier looks: a uuid, an element, or the id's text inside text, json or bytes)."""
    col = f't."{column}"'
    if udt == "uuid":
        return f"{col} = $1::uuid"
    if udt == "_uuid":
        return f"$1::uuid = ANY({col})"
    if udt in ("text", "varchar", "_text", "json", "jsonb"):
        return f"strpos({col}::text, $1::uuid::text) > 0"
    if udt == "bytea":
        return f"position(convert_to($1::uuid::text, 'UTF8') IN {col}) > 0"
    return None


async def _rows_of_user(
    db: asyncpg.Connection, user_id: str
) -> tuple[dict[str, list[asyncpg.Record]], dict[str, list[str]]]:
    """Every table holding a row of the user, with those rows; and every table's columns.

    A row is the user's when one of its columns names their id, or when it hangs (by a
    foreign key) off a row of theirs: a message of their request, a token of their
    session."""
    columns: dict[str, list[str]] = {}
    conditions: dict[str, list[str]] = {}
    uid = UUID(user_id)
    for c in await db.fetch(_COLUMNS):
        table = c["table_name"]
        columns.setdefault(table, []).append(c["column_name"])
        condition = _names_id(c["column_name"], c["udt_name"])
        if condition and await db.fetchval(
            f'SELECT EXISTS (SELECT 1 FROM "{table}" t WHERE {condition})', uid
        ):
            conditions.setdefault(table, []).append(condition)
    keys = await db.fetch(_FOREIGN_KEYS)
    followed: set[tuple[str, str, str]] = set()
    while True:  # children of the user's rows, then their children, until none is new
        due = [
            k for k in keys
            if k["parent"] in conditions
            and (k["child"], k["child_column"], k["parent"]) not in followed
        ]  # fmt: skip
        if not due:
            break
        for k in due:
            followed.add((k["child"], k["child_column"], k["parent"]))
            parent = " OR ".join(conditions[k["parent"]])
            condition = (
                f't."{k["child_column"]}" IN (SELECT t."{k["parent_column"]}"'
                f' FROM "{k["parent"]}" t WHERE {parent})'
            )
            if await db.fetchval(
                f'SELECT EXISTS (SELECT 1 FROM "{k["child"]}" t WHERE {condition})', uid
            ):
                conditions.setdefault(k["child"], []).append(condition)
    rows = {
        table: list(await db.fetch(f'SELECT * FROM "{table}" t WHERE {" OR ".join(c)}', uid))
        for table, c in conditions.items()
    }
    return rows, columns


def _at(item: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        item = item[part]
    return item


async def _as_exported(value: Any, table: str, column: str, user_id: str, vault: Vault) -> Any:
    """A stored value as the export writes it (a sealed one opened with the user's key)."""
    if isinstance(value, bytes):
        return await vault.open(user_id, value, purpose=f"accounts.{table}.{column}")
    if isinstance(value, datetime):
        return value
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, list):
        return list(value)
    return value


def _same(stored: Any, exported: Any) -> bool:
    if isinstance(stored, datetime):
        return exported is not None and datetime.fromisoformat(exported) == stored
    if isinstance(stored, Decimal):
        return exported is not None and Decimal(exported) == stored
    return bool(stored == exported)


async def _filled_in(client: httpx.AsyncClient, bus: BusTail, root: Operator) -> dict[str, Any]:
    """A user who used every form, and what operators did for them: the user, and the
    recipient they consented to."""
    user = await active_user(client, bus, birth_date="1979-11-23")
    profile = await client.patch(
        f"{API}/me", json={"name": f"Renamed {unique()}", "locale": "de"}, headers=user.headers
    )
    assert profile.status_code == 200, profile.text
    user.name = profile.json()["name"]
    moving = await client.patch(
        f"{API}/me",
        json={"email": unique_email("moving"), "current_password": user.password},
        headers=user.headers,
    )
    assert moving.is_success, moving.text
    saved = await client.put(
        f"{API}/me/preferences",
        json={"marketing_email": True, "personalisation": False, "tracking_opt_out": True},
        headers=user.headers,
    )
    assert saved.status_code == 200, saved.text
    user.access = saved.json()["access_token"] or user.access
    for model in ("Phone A", "Phone B"):
        added = await client.post(
            f"{API}/me/devices", json={"model": model, "damage_state": "battery"},
            headers=user.headers,
        )  # fmt: skip
        assert added.status_code == 201, added.text
    changed = await client.patch(
        f"{API}/me/devices/{added.json()['id']}", json={"model": "Phone B2"}, headers=user.headers
    )
    assert changed.status_code == 200, changed.text
    thread = await client.post(
        f"{API}/me/requests", json={"category": "repair", "text": "Screen cracked"},
        headers=user.headers,
    )  # fmt: skip
    assert thread.status_code == 201, thread.text
    support = await new_operator(client, root, "support")
    replied = await client.post(
        f"{API}/operator/requests/{thread.json()['id']}/replies",
        json={"text": "Bring it in on Monday"},
        headers=support.headers,
    )
    assert replied.status_code == 201, replied.text
    again = await client.post(
        f"{API}/me/requests/{thread.json()['id']}/messages",
        json={"text": "Monday is fine"},
        headers=user.headers,
    )
    assert again.status_code == 201, again.text
    recipient = await client.post(
        f"{API}/operator/recipients",
        json={"name": unique("partner"), "kind": "partner", "purpose": "repairs",
              "allowed_fields": ["email"]},
        headers=root.headers,
    )  # fmt: skip
    assert recipient.status_code == 201, recipient.text
    consents = f"{API}/me/consents/{recipient.json()['id']}"
    granted = await client.put(consents, json={"granted": True}, headers=user.headers)
    assert granted.status_code == 200, granted.text
    officer = await new_operator(client, root, "privacy_officer")
    disclosed = await client.post(
        f"{API}/operator/recipients/{recipient.json()['id']}/exports", headers=officer.headers
    )
    assert disclosed.status_code == 200, disclosed.text
    for choice in (False, True):  # withdrawn (the recipient is asked to erase), then again
        chosen = await client.put(consents, json={"granted": choice}, headers=user.headers)
        assert chosen.status_code == 200, chosen.text
    version = await publish_policy(client, root, "Repairs data kept two years.")
    accepted = await client.post(
        f"{API}/me/policy-acceptances", json={"version": version}, headers=user.headers
    )
    assert accepted.status_code == 201, accepted.text
    await record_invoice(client, root, user.id, description="Screen, Phone A")
    deletion = await client.post(
        f"{API}/me/deletion-requests", json={"password": user.password}, headers=user.headers
    )
    assert deletion.status_code == 202, deletion.text
    cancelled = await client.post(
        f"{API}/me/deletion-requests/{deletion.json()['id']}/cancel", headers=user.headers
    )
    assert cancelled.status_code == 200, cancelled.text
    return {"user": user, "recipient": recipient.json()}


@pytest.mark.promise("P-11")
async def test_every_table_holding_my_rows_is_in_my_export_or_kept_out_for_a_reason(
    client: httpx.AsyncClient, bus: BusTail, root: Operator, db: asyncpg.Connection
) -> None:
    filled = await _filled_in(client, bus, root)
    user: User = filled["user"]
    export = await client.get(f"{API}/me/export", headers=user.headers)
    assert export.status_code == 200, export.text
    data = export.json()
    rows, columns = await _rows_of_user(db, user.id)

    # The map is of tables that exist, and says of each column of each exported table
    # whether it is shown or why not: a column added to one fails here.
    assert set(EXPORTED) | set(NOT_EXPORTED) <= set(columns)
    for table, spec in EXPORTED.items():
        assert set(spec.shown) | set(spec.kept_out) == set(columns[table]), table
        assert not set(spec.shown) & set(spec.kept_out), table
    # The search finds what the journey filled in (so it is one that finds), and every
    # table it finds is decided: a new table holding user rows fails here.
    assert set(rows) >= FILLED, FILLED - set(rows)
    assert set(rows) <= set(EXPORTED) | set(NOT_EXPORTED), set(rows) - set(EXPORTED)

    missing: list[tuple[str, str, Any, Any]] = []
    async with card_vault() as vault:
        for table, spec in EXPORTED.items():
            stored = rows.get(table, [])
            if spec.key is None:  # matched in order
                stored = sorted(stored, key=lambda r: r["id"])
            items = spec.items(data)
            assert len(items) == len(stored), (table, items, stored)
            for n, row in enumerate(stored):
                if spec.key is None:
                    item = items[n]
                else:
                    wanted = await _as_exported(row[spec.key[0]], table, spec.key[0], user.id,
                                                vault)  # fmt: skip
                    [item] = [i for i in items if i[spec.key[1]] == wanted]
                for column, path in spec.shown.items():
                    value = await _as_exported(row[column], table, column, user.id, vault)
                    if not _same(value, _at(item, path)):
                        missing.append((table, column, value, _at(item, path)))
    assert missing == []
    # Read from the recipients table, the disclosure shows who got the data and why.
    assert [(d["recipient"], d["purpose"]) for d in data["disclosures"]] == [
        (filled["recipient"]["name"], "repairs")
    ]
