"""After a deletion, what is left of the subject's sealed data opens for no one (P-14).

Personal fields are sealed at rest with the subject's vault key, so a search for them in
clear finds nothing before a deletion as after it: it cannot fail. This test looks for
the sealed values themselves. Before the deletion it takes a copy of the subject's data
key (what a backup of the vault, or an attacker, would hold) and tries it on every
sealed-looking value of every table of every service database, under every purpose the
platform seals with: each field the user gave is found that way, where it is stored,
and the platform's vault opens it too. After the deletion the vault refuses every one
of them (SubjectShredded), the copied key finds nothing left anywhere, and the verifier,
which did find the subject's rows before, finds only what a retention rule keeps.
"""

from __future__ import annotations

import base64
import uuid
from collections import defaultdict
from typing import Any

import asyncpg
import httpx
import pytest

from services.deletion.config import DeletionSettings
from shared.config import PlatformSettings
from shared.databases import SERVICE_DATABASES, VAULT_DATABASE
from shared.events.catalogue.accounts import (
    CARD_EMAIL,
    CARD_GUARDIAN_EMAIL,
    CARD_NAME,
    CARD_PENDING_EMAIL,
)
from shared.vault import SubjectShredded, Vault
from shared.vault.crypto import SealBroken, open_with, unwrap_key
from tests.e2e.accounts.support import (
    BusTail,
    User,
    active_user,
    admin,
    new_operator,
    record_invoice,
    unique_email,
)
from tests.e2e.deletion.support import API, officer, wait_for_stage
from tests.support.cards import opened
from tests.support.mailbox import eventually

ACCOUNTS = "/api/accounts"
# A sealed value as a row's text shows it: ``\x`` then hex, version byte 01, a 12-byte
# nonce and at least a 16-byte tag (a bytea column, or one copied into json).
SEALED_HEX = r"x(01(?:[0-9a-f]{2}){28,})"
# Where a retention rule lets the verifier still find an erased subject's id (ids and
# dates only), and the rule: anything else it finds fails this test.
KEPT_BY_RULE = {
    "accounts.audit_log.subject_id": "security_audit",  # operators' reads and writes
    "accounts.deletion_requests.user_id": "disclosure_log",
    "notifier.erasures.subject_id": "disclosure_log",
}
# Tables holding the subject's sealed values without the subject's id: the verifier
# finds them through their parent's rows (they go with them, ON DELETE CASCADE).
FOUND_THROUGH = {"accounts.request_messages": "accounts.requests"}


async def _copy_of_data_key(settings: PlatformSettings, subject: str) -> bytes:
    """The subject's data key, unwrapped here: a copy that outlives its shredding."""
    conn = await asyncpg.connect(settings.database_dsn(VAULT_DATABASE))
    try:
        wrapped = await conn.fetchval(
            "SELECT wrapped_key FROM subject_keys WHERE subject_id = $1", subject
        )
    finally:
        await conn.close()
    assert wrapped is not None, "the subject has no key: nothing of theirs is sealed"
    master = base64.b64decode(settings.vault_master_key.get_secret_value())
    return unwrap_key(master, subject, wrapped)


Sealed = dict[tuple[str, str], dict[bytes, str]]  # (database.table, purpose) -> value -> text


async def _sealed_for(key: bytes, subject: str) -> Sealed:
    """Every value of any table of any service database (a bytea column, or one copied
    into text or json) that ``key`` opens for ``subject``, under any purpose a service
    seals with: "<database>.<table>.<column>" of every bytea column, and the cards'."""
    dsn = DeletionSettings(environment="test").admin_dsn
    candidates: dict[str, set[bytes]] = defaultdict(set)
    purposes = {CARD_EMAIL, CARD_NAME, CARD_GUARDIAN_EMAIL, CARD_PENDING_EMAIL}
    for database in SERVICE_DATABASES:
        conn = await asyncpg.connect(
            dsn(database), server_settings={"default_transaction_read_only": "on"}
        )
        try:
            for column in await conn.fetch(
                "SELECT c.table_name, c.column_name FROM information_schema.columns c"
                " JOIN information_schema.tables t USING (table_schema, table_name)"
                " WHERE c.table_schema = 'public' AND t.table_type = 'BASE TABLE'"
                " AND c.udt_name = 'bytea'"
            ):
                purposes.add(f"{database}.{column['table_name']}.{column['column_name']}")
            for table in await conn.fetch(
                "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
            ):
                name = table["tablename"]
                found = await conn.fetch(
                    f"SELECT m[1] AS hex FROM \"{name}\" t, regexp_matches(t::text, $1, 'g') AS m",
                    SEALED_HEX,
                )
                candidates[f"{database}.{name}"] |= {bytes.fromhex(r["hex"]) for r in found}
        finally:
            await conn.close()
    opened_here: Sealed = defaultdict(dict)
    for place, values in candidates.items():
        for value in values:
            for purpose in purposes:
                try:
                    text = open_with(key, subject, purpose, value)
                except SealBroken:
                    continue
                opened_here[(place, purpose)][value] = text
    return dict(opened_here)


def _texts(sealed: Sealed) -> set[tuple[str, str, str]]:
    return {(place, purpose, text) for (place, purpose), v in sealed.items() for text in v.values()}


async def _verify(client: httpx.AsyncClient, request_id: str) -> dict[str, Any]:
    verdict = await client.post(f"{API}/operator/requests/{request_id}/verify", headers=officer())
    assert verdict.status_code == 200, verdict.text
    body: dict[str, Any] = verdict.json()
    return body


async def _filled_in(client: httpx.AsyncClient, user: User) -> dict[str, str]:
    """The user gives a device, a request (answered), a new address not yet confirmed;
    an operator records an invoice with a description. What each field says."""
    given = {
        "model": f"Phone {uuid.uuid4().hex[:8]}",
        "said": f"My screen broke, call me {uuid.uuid4().hex}",
        "moving_to": unique_email("moving"),
        "description": f"Battery for {user.name}",
    }
    device = await client.post(
        f"{ACCOUNTS}/me/devices",
        json={"model": given["model"], "damage_state": "cracked_screen"},
        headers=user.headers,
    )
    assert device.status_code == 201, device.text
    thread = await client.post(
        f"{ACCOUNTS}/me/requests",
        json={"category": "repair", "text": given["said"]},
        headers=user.headers,
    )
    assert thread.status_code == 201, thread.text
    root = await admin(client)
    support = await new_operator(client, root, "support")
    reply = await client.post(
        f"{ACCOUNTS}/operator/requests/{thread.json()['id']}/replies",
        json={"text": "We will repair it"},
        headers=support.headers,
    )
    assert reply.status_code == 201, reply.text
    moving = await client.patch(
        f"{ACCOUNTS}/me",
        json={"email": given["moving_to"], "current_password": user.password},
        headers=user.headers,
    )
    assert moving.is_success, moving.text
    await record_invoice(client, root, user.id, description=given["description"])
    return given


@pytest.mark.promise("P-14")
@pytest.mark.promise("P-16")
async def test_every_sealed_value_of_an_erased_subject_opens_for_no_one(
    client: httpx.AsyncClient, bus: BusTail, settings: PlatformSettings, vault: Vault
) -> None:
    user = await active_user(client, bus, birth_date="1984-05-06")
    bystander = await active_user(client, bus)
    given = await _filled_in(client, user)
    key = await _copy_of_data_key(settings, user.id)
    # Each field given, sealed where it is stored: accounts' own tables, and the
    # notifier's copy of the contact card (once the card with the new address arrived).
    expected = {
        ("accounts.users", "accounts.users.email", user.email),
        ("accounts.users", "accounts.users.name", user.name),
        ("accounts.users", "accounts.users.birth_date", "1984-05-06"),
        ("accounts.users", "accounts.users.pending_email", given["moving_to"]),
        ("accounts.devices", "accounts.devices.model", given["model"]),
        ("accounts.request_messages", "accounts.request_messages.body", given["said"]),
        ("accounts.invoices", "accounts.invoices.description", given["description"]),
        ("notifier.contacts", "notifier.contacts.email", user.email),
        ("notifier.contacts", "notifier.contacts.name", user.name),
        ("notifier.contacts", "notifier.contacts.pending_email", given["moving_to"]),
    }
    before = await eventually(
        lambda: _sealed_for(key, user.id), lambda found: expected <= _texts(found), timeout=60
    )
    # The platform's vault opens each of them too: they are the subject's data, readable.
    for (_, purpose), values in before.items():
        for value, text in values.items():
            assert await vault.open(user.id, value, purpose=purpose) == text
    cards = bus.sealed_cards(user.id)
    assert user.email in {(await opened(card)).email for card in cards}

    deletion = await client.post(
        f"{ACCOUNTS}/me/deletion-requests", json={"password": user.password}, headers=user.headers
    )
    assert deletion.status_code == 202, deletion.text
    request_id = str(deletion.json()["id"])
    # In grace, the verifier finds the subject in every table where a sealed value of
    # theirs is (or in its parent table), as personal data no rule keeps.
    await wait_for_stage(client, user.id, request_id, ("requested", "grace"), timeout=60)
    early = await _verify(client, request_id)
    assert early["clean"] is False, early
    found_early = {f["place"]: f["kept_by_rule"] for f in early["findings"]}
    tables_early = {place.rsplit(".", 1)[0] for place in found_early}
    for place, _ in before:
        assert FOUND_THROUGH.get(place, place) in tables_early, (place, sorted(found_early))

    await wait_for_stage(client, user.id, request_id, ("complete",), timeout=240)
    assert await vault.is_shredded(user.id)
    for (_, purpose), values in before.items():
        for value in values:
            with pytest.raises(SubjectShredded):
                await vault.open(user.id, value, purpose=purpose)
    for card in cards:
        with pytest.raises(SubjectShredded):
            await opened(card)
    # The copied key finds nothing of the subject's left in any database; the same scan
    # still finds a live user's data with their key (it can find what is there).
    assert await _sealed_for(key, user.id) == {}
    other = _texts(await _sealed_for(await _copy_of_data_key(settings, bystander.id), bystander.id))
    assert ("accounts.users", "accounts.users.email", bystander.email) in other
    assert ("notifier.contacts", "notifier.contacts.email", bystander.email) in other
    # The verifier finds the subject's id only where a rule keeps it, and says so.
    verdict = await _verify(client, request_id)
    assert (verdict["clean"], verdict["vault_key_shredded"]) == (True, True), verdict
    kept = {f["place"]: f["kept_by_rule"] for f in verdict["findings"]}
    assert kept, verdict  # the deletion's own record at least: the scan does find
    assert {p: kept_by for p, kept_by in kept.items() if KEPT_BY_RULE.get(p) != kept_by} == {}
