"""Consents and disclosures (P-18, P-19), my export (P-11), deletion and erasure."""

from __future__ import annotations

import json
import time
import uuid
from datetime import UTC, datetime

import asyncpg
import httpx
import pytest

from shared.bus.kafka_options import reliable_producer
from shared.config import PlatformSettings
from shared.events import encode_envelope, envelope_for
from shared.events.catalogue.deletion import DeletionStageChanged, EraseSubject
from tests.e2e.accounts.support import (
    API,
    BusTail,
    Operator,
    User,
    active_user,
    consented_child,
    erase_subject,
    erasure_receipt,
    log_in,
    new_operator,
    publish,
    publish_policy,
    record_invoice,
    sign_up,
    unique,
    unique_email,
    verify,
)
from tests.e2e.platform.journeys import running
from tests.support.mailbox import eventually

SENSITIVE = {"age_band", "birth_date", "guardian_email", "requests"}


async def _recipient(
    client: httpx.AsyncClient, root: Operator, kind: str, fields: list[str]
) -> dict[str, str]:
    response = await client.post(
        f"{API}/operator/recipients",
        json={"name": unique(kind), "kind": kind, "purpose": "repairs", "allowed_fields": fields},
        headers=root.headers,
    )
    assert response.status_code == 201, response.text
    body: dict[str, str] = response.json()
    return body


async def _consent(client: httpx.AsyncClient, user: User, recipient_id: str, granted: bool) -> None:
    response = await client.put(
        f"{API}/me/consents/{recipient_id}", json={"granted": granted}, headers=user.headers
    )
    assert response.status_code == 200, response.text


@pytest.mark.promise("P-18")
async def test_a_user_without_consent_is_never_in_a_third_party_export(
    client: httpx.AsyncClient, bus: BusTail, root: Operator, db: asyncpg.Connection
) -> None:
    partner = await _recipient(client, root, "partner", ["user_id", "email", "name"])
    officer = await new_operator(client, root, "privacy_officer")
    consenting, silent, revoked = [await active_user(client, bus) for _ in range(3)]
    await _consent(client, consenting, partner["id"], True)
    await _consent(client, revoked, partner["id"], True)
    await _consent(client, revoked, partner["id"], False)
    # Off by default: a user who never chose has no consent.
    assert (await client.get(f"{API}/me/consents", headers=silent.headers)).json() == {
        "current": [],
        "history": [],
    }
    history = (await client.get(f"{API}/me/consents", headers=revoked.headers)).json()
    assert [h["granted"] for h in history["history"]] == [True, False]
    assert history["current"][0]["granted"] is False

    export = await client.post(
        f"{API}/operator/recipients/{partner['id']}/exports", headers=officer.headers
    )
    assert export.status_code == 200, export.text
    records = export.json()["records"]
    assert [r["user_id"] for r in records] == [consenting.id]
    assert records[0]["email"] == consenting.email
    assert silent.email not in export.text
    assert revoked.email not in export.text
    # Every disclosure is logged, with its audit row.
    logged = await db.fetch(
        "SELECT user_id, fields FROM disclosures WHERE export_id = $1",
        uuid.UUID(export.json()["export_id"]),
    )
    assert [(str(r["user_id"]), sorted(r["fields"])) for r in logged] == [
        (consenting.id, ["email", "name", "user_id"])
    ]
    audited = await db.fetchval(
        "SELECT count(*) FROM audit_log WHERE subject_id = $1 AND action = 'disclose'",
        uuid.UUID(consenting.id),
    )
    assert audited == 1
    mine = (await client.get(f"{API}/me/export", headers=consenting.headers)).json()
    assert [d["recipient"] for d in mine["disclosures"]] == [partner["name"]]


async def test_a_consent_sent_again_as_it_stands_changes_nothing(
    client: httpx.AsyncClient, bus: BusTail, root: Operator
) -> None:
    """PUT is idempotent: the choice in force sent again (a retry, a second tab) keeps
    the time it was made, adds no record and publishes no event; a change still does."""
    partner = await _recipient(client, root, "partner", ["user_id", "email"])
    user = await active_user(client, bus)
    path = f"{API}/me/consents/{partner['id']}"

    first = await client.put(path, json={"granted": True}, headers=user.headers)
    assert first.status_code == 200, first.text
    for _ in range(2):
        again = await client.put(path, json={"granted": True}, headers=user.headers)
        assert again.status_code == 200, again.text
        assert again.json() == first.json()  # the time the consent was given, kept
    withdrawn = await client.put(path, json={"granted": False}, headers=user.headers)
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["granted"] is False
    # The user's events keep their order (one key): once the withdrawal is on the bus,
    # any event of the repeats would be too.
    await bus.event("consent.changed.", user.id, granted=False)
    published = [
        r.value["data"]["granted"] for r in bus.records
        if r.key == user.id and r.value is not None
        and r.value["type"].startswith("consent.changed.")
    ]  # fmt: skip
    assert published == [True, False]
    history = (await client.get(f"{API}/me/consents", headers=user.headers)).json()["history"]
    assert [h["granted"] for h in history] == [True, False]


@pytest.mark.promise("P-19")
async def test_a_processor_export_never_contains_a_sensitive_field(
    client: httpx.AsyncClient, bus: BusTail, root: Operator, db: asyncpg.Connection
) -> None:
    refused = await client.post(
        f"{API}/operator/recipients",
        json={
            "name": unique("proc"),
            "kind": "processor",
            "purpose": "repairs",
            "allowed_fields": ["email", "age_band", "birth_date"],
        },
        headers=root.headers,
    )
    assert refused.status_code == 422
    assert refused.json()["type"].endswith("/sensitive-field")
    processor = await _recipient(
        client, root, "processor", ["user_id", "email", "device_damage_states", "device_models"]
    )
    officer = await new_operator(client, root, "privacy_officer")
    user = await active_user(client, bus, birth_date="2010-05-05")
    await client.post(
        f"{API}/me/devices",
        json={"model": "Phone P", "damage_state": "battery"},
        headers=user.headers,
    )
    await _consent(client, user, processor["id"], True)
    # Registration refuses sensitive fields; the export filters them again, so a row
    # that holds one anyway (an older registration, a hand edit) discloses none.
    await db.execute(
        "UPDATE recipients SET allowed_fields = allowed_fields || '{birth_date,age_band}'"
        " WHERE id = $1",
        uuid.UUID(processor["id"]),
    )
    export = await client.post(
        f"{API}/operator/recipients/{processor['id']}/exports", headers=officer.headers
    )
    assert export.status_code == 200
    (record,) = export.json()["records"]
    assert set(record) == {"user_id", "email", "device_damage_states", "device_models"}
    assert not set(record) & SENSITIVE
    assert "13_to_17" not in export.text
    assert "2010-05-05" not in export.text
    assert record["device_damage_states"] == ["battery"]


@pytest.mark.promise("P-19")
async def test_every_record_names_its_user_so_that_a_forwarded_erasure_finds_it(
    client: httpx.AsyncClient, bus: BusTail, root: Operator, settings: PlatformSettings
) -> None:
    """A processor registered without user_id gets it all the same: the erasures
    forwarded to it name the subject by that id alone."""
    made = await client.post(
        f"{API}/operator/recipients",
        json={"name": unique("processor"), "kind": "processor", "purpose": "repairs",
              "allowed_fields": ["email", "name", "device_models"]},
        headers=root.headers,
    )  # fmt: skip
    assert made.status_code == 201, made.text
    fields = ["user_id", "email", "name", "device_models"]
    assert made.json()["allowed_fields"] == fields  # as users are shown it
    processor = made.json()["id"]
    officer = await new_operator(client, root, "privacy_officer")
    user = await active_user(client, bus)
    listed = (await client.get(f"{API}/recipients", headers=user.headers)).json()
    assert [r["allowed_fields"] for r in listed if r["id"] == processor] == [fields]
    await _consent(client, user, processor, True)
    export = await client.post(
        f"{API}/operator/recipients/{processor}/exports", headers=officer.headers
    )
    assert export.status_code == 200, export.text
    (record,) = export.json()["records"]
    assert (list(record), record["user_id"]) == (fields, user.id)

    await erase_subject(settings, bus, user.id, ("security_audit", "disclosure_log"))
    forwarded = await bus.event("recipient.erasure_requested.v2", user.id)
    assert (forwarded["data"]["recipient_id"], forwarded["data"]["subject_id"]) == (
        processor, record["user_id"],
    )  # fmt: skip


@pytest.mark.promise("P-19")
async def test_an_erasure_is_forwarded_once_to_each_recipient_the_data_was_disclosed_to(
    client: httpx.AsyncClient, bus: BusTail, root: Operator, settings: PlatformSettings
) -> None:
    processor = await _recipient(client, root, "processor", ["user_id", "email"])
    never_given = await _recipient(client, root, "processor", ["user_id"])
    officer = await new_operator(client, root, "privacy_officer")
    user = await active_user(client, bus)
    for recipient in (processor, never_given):
        await _consent(client, user, recipient["id"], True)
    export = await client.post(
        f"{API}/operator/recipients/{processor['id']}/exports", headers=officer.headers
    )
    assert export.status_code == 200, export.text
    assert user.id in [r["user_id"] for r in export.json()["records"]]

    first = await erase_subject(settings, bus, user.id, ("security_audit", "disclosure_log"))
    assert first["erased"]["forwarded_to_recipients"] == 1
    told = {
        "recipient_id": processor["id"],
        "subject_id": user.id,
        "request_id": first["request_id"],
        "export_ids": [export.json()["export_id"]],
    }
    # Both versions: the first for connectors that read it, the second says what.
    assert (await bus.event("recipient.erasure_requested.v1", user.id))["data"] == told
    v2 = await bus.event("recipient.erasure_requested.v2", user.id)
    assert v2["data"] == {**told, "reason": "account_erased", "fields": []}
    # The release of the disclosure log (or a resend) tells no one twice.
    release = await erase_subject(settings, bus, user.id, ("security_audit",))
    assert release["erased"]["forwarded_to_recipients"] == 0
    assert release["erased"]["recipient_erasures"] == 1  # the proof goes with the log
    forwarded = [
        r for r in bus.records
        if r.key == user.id and r.value and r.value["type"].startswith("recipient.erasure")
    ]  # fmt: skip
    assert sorted(r.value["type"] for r in forwarded if r.value) == [
        "recipient.erasure_requested.v1", "recipient.erasure_requested.v2",
    ]  # fmt: skip


@pytest.mark.promise("P-19")
@pytest.mark.promise("P-18")
async def test_a_deleted_device_and_a_withdrawn_consent_reach_the_recipients_that_hold_them(
    client: httpx.AsyncClient, bus: BusTail, root: Operator, settings: PlatformSettings
) -> None:
    with_devices = await _recipient(client, root, "processor", ["user_id", "device_models"])
    without = await _recipient(client, root, "processor", ["user_id", "email"])
    partner = await _recipient(client, root, "partner", ["user_id", "email"])
    officer = await new_operator(client, root, "privacy_officer")
    user = await active_user(client, bus)
    device = await client.post(
        f"{API}/me/devices", json={"model": "Phone D", "damage_state": "water"},
        headers=user.headers,
    )  # fmt: skip
    assert device.status_code == 201, device.text
    exports = {}
    for recipient in (with_devices, without, partner):
        await _consent(client, user, recipient["id"], True)
        made = await client.post(
            f"{API}/operator/recipients/{recipient['id']}/exports", headers=officer.headers
        )
        assert made.status_code == 200, made.text
        assert user.id in [r["user_id"] for r in made.json()["records"]]
        exports[recipient["id"]] = made.json()["export_id"]

    # The device's erasure (as the deletion service commands it) reaches the processor
    # whose export held device models, and only it: the other one got no device field.
    request_id = uuid.uuid4()
    command = EraseSubject(
        request_id=request_id, subject_id=uuid.UUID(user.id), scope="device",
        item_id=uuid.UUID(device.json()["id"]),
    )  # fmt: skip
    await publish(settings, command, source="deletion", subject=user.id)
    [receipt] = await erasure_receipt(bus, user.id, request_id)
    assert receipt["erased"]["forwarded_to_recipients"] == 1
    told = await bus.event("recipient.erasure_requested.v2", user.id, reason="item_deleted")
    assert told["data"] == {
        "recipient_id": with_devices["id"],
        "subject_id": user.id,
        "request_id": str(request_id),
        "export_ids": [exports[with_devices["id"]]],
        "reason": "item_deleted",
        "fields": ["device_models", "device_damage_states"],
    }

    # Withdrawing the partner's consent asks it to erase what it was given; withdrawing
    # again asks nothing more.
    await _consent(client, user, partner["id"], False)
    await _consent(client, user, partner["id"], False)
    withdrawn = await bus.event(
        "recipient.erasure_requested.v2", user.id, reason="consent_withdrawn"
    )
    assert (withdrawn["data"]["recipient_id"], withdrawn["data"]["export_ids"]) == (
        partner["id"], [exports[partner["id"]]],
    )  # fmt: skip
    # The user's own later event is relayed after anything queued before it (one key):
    # once seen, a second forward would have been seen too.
    renamed = await client.patch(f"{API}/me", json={"name": "After"}, headers=user.headers)
    assert renamed.status_code == 200
    await bus.event("profile.updated.", user.id)
    forwarded = [
        r.value["data"]["reason"] for r in bus.records
        if r.key == user.id and r.value and r.value["type"].startswith("recipient.erasure")
    ]  # fmt: skip
    assert sorted(forwarded) == ["consent_withdrawn", "item_deleted"]


@pytest.mark.promise("P-26")
async def test_a_child_under_13_is_never_in_a_third_party_export_even_with_their_consent(
    client: httpx.AsyncClient, bus: BusTail, root: Operator, db: asyncpg.Connection
) -> None:
    partner = await _recipient(client, root, "partner", ["user_id", "email", "name"])
    officer = await new_operator(client, root, "privacy_officer")
    child = await sign_up(
        client, birth_date=f"{time.gmtime().tm_year - 10}-01-01", guardian_email=unique_email("g")
    )
    await verify(client, bus, child)
    consent = await bus.notice(child.id, "parental_consent")
    confirmed = await client.post(
        f"{API}/guardian-consents", json={"token": consent["params"]["token"]}
    )
    assert confirmed.json()["active"] is True
    await log_in(client, child)
    teen = await active_user(client, bus, birth_date=f"{time.gmtime().tm_year - 15}-01-01")
    for user in (child, teen):
        await _consent(client, user, partner["id"], True)
    export = await client.post(
        f"{API}/operator/recipients/{partner['id']}/exports", headers=officer.headers
    )
    assert export.status_code == 200, export.text
    assert [r["user_id"] for r in export.json()["records"]] == [teen.id]
    assert child.email not in export.text
    assert child.name not in export.text
    disclosed = "SELECT count(*) FROM disclosures WHERE user_id = $1"
    assert await db.fetchval(disclosed, uuid.UUID(child.id)) == 0
    audited = "SELECT count(*) FROM audit_log WHERE subject_id = $1"
    assert await db.fetchval(audited, uuid.UUID(child.id)) == 0


@pytest.mark.promise("P-11")
async def test_my_export_holds_every_field_i_gave_that_is_still_stored(
    client: httpx.AsyncClient, bus: BusTail, root: Operator
) -> None:
    user = await active_user(client, bus, birth_date="1985-07-14")
    await client.post(
        f"{API}/me/devices",
        json={"model": "Phone E", "damage_state": "buttons"},
        headers=user.headers,
    )
    removed = await client.post(
        f"{API}/me/devices",
        json={"model": "Old Phone", "damage_state": "other"},
        headers=user.headers,
    )
    await client.delete(f"{API}/me/devices/{removed.json()['id']}", headers=user.headers)
    await client.post(
        f"{API}/me/requests",
        json={"category": "feedback", "text": "Great repair, thanks"},
        headers=user.headers,
    )
    await client.put(
        f"{API}/me/preferences",
        json={"marketing_email": True, "personalisation": False, "tracking_opt_out": True},
        headers=user.headers,
    )
    partner = await _recipient(client, root, "partner", ["email"])
    for granted in (True, False, True):  # every change is kept, not only the last
        await _consent(client, user, partner["id"], granted)
    relocated = await client.patch(f"{API}/me", json={"locale": "fr"}, headers=user.headers)
    assert relocated.status_code == 200, relocated.text
    # A new address given, not yet confirmed: held (for its link), so exported too.
    moving_to = unique_email("moving")
    moving = await client.patch(
        f"{API}/me",
        json={"email": moving_to, "current_password": user.password},
        headers=user.headers,
    )
    assert moving.is_success, moving.text
    version = await publish_policy(client, root, "Retention periods clarified.")
    accepted = await client.post(
        f"{API}/me/policy-acceptances", json={"version": version}, headers=user.headers
    )
    assert accepted.status_code == 201, accepted.text
    invoice = await record_invoice(client, root, user.id, description="New battery, Phone E")

    export = await client.get(f"{API}/me/export", headers=user.headers)
    assert export.status_code == 200
    data = export.json()
    profile = data["profile"]
    assert (profile["name"], profile["email"], profile["birth_date"]) == (
        user.name,
        user.email,
        "1985-07-14",
    )
    assert profile["preferences"] == {
        "marketing_email": True,
        "personalisation": False,
        "tracking_opt_out": True,
    }
    assert [(d["model"], d["damage_state"]) for d in data["devices"]] == [("Phone E", "buttons")]
    assert [m["text"] for r in data["requests"] for m in r["messages"]] == ["Great repair, thanks"]
    assert profile["locale"] == "fr"
    assert profile["pending_email"] == moving_to
    assert profile["email"] == user.email  # still the confirmed one
    assert [(c["recipient_id"], c["granted"]) for c in data["consents"]] == [
        (partner["id"], True),
        (partner["id"], False),
        (partner["id"], True),
    ]
    assert [a["version"] for a in data["policy_acceptances"]] == [version]
    assert data["invoices"] == [invoice]
    assert (invoice["amount"], invoice["description"]) == ("129.90", "New battery, Phone E")
    # A deleted device is no device of mine; while its erasure runs (seconds, or a
    # legal hold) it is still held, and shown as such, nowhere else.
    assert "Old Phone" not in [d["model"] for d in data["devices"]]
    held = [i for i in data["deleted_awaiting_erasure"] if i.get("model") == "Old Phone"]
    assert export.text.count("Old Phone") == len(held) <= 1
    assert "pw-" not in export.text  # never the password nor its hash
    assert "argon2" not in export.text


@pytest.mark.promise("P-11")
async def test_a_childs_export_holds_the_guardians_address_given_at_sign_up(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    child, guardian = await consented_child(client, bus)
    export = await client.get(f"{API}/me/export", headers=child.headers)
    assert export.status_code == 200, export.text
    profile = export.json()["profile"]
    assert (profile["email"], profile["guardian_email"]) == (child.email, guardian)


async def test_exports_are_rate_limited(client: httpx.AsyncClient, bus: BusTail) -> None:
    user = await active_user(client, bus)
    statuses = [
        (await client.get(f"{API}/me/export", headers=user.headers)).status_code for _ in range(4)
    ]
    assert statuses == [200, 200, 200, 429]


async def _secrets_dropped(settings: PlatformSettings, notice_id: str) -> None:
    conn = await asyncpg.connect(settings.database_dsn("notifier"))
    try:
        params = await eventually(
            lambda: conn.fetchval(
                "SELECT n.params FROM notices n JOIN deliveries d USING (notice_id)"
                " WHERE n.notice_id = $1 AND d.status = 'done'",
                uuid.UUID(notice_id),
            ),
            lambda found: found is not None,
        )
    finally:
        await conn.close()
    params = json.loads(params) if isinstance(params, str) else params
    assert params["request_id"]  # the notice is there, sent
    assert not {"token", "link"} & set(params)


async def test_deletion_needs_the_password_and_can_be_cancelled(
    client: httpx.AsyncClient, bus: BusTail, settings: PlatformSettings
) -> None:
    user = await active_user(client, bus)
    wrong = await client.post(
        f"{API}/me/deletion-requests", json={"password": "not-my-password"}, headers=user.headers
    )
    assert wrong.status_code == 403
    asked = await client.post(
        f"{API}/me/deletion-requests", json={"password": user.password}, headers=user.headers
    )
    assert asked.status_code == 202
    assert asked.json()["status"] == "requested"
    request_id = asked.json()["id"]
    event = await bus.event("deletion.requested.", user.id, request_id=request_id)
    assert event["data"]["initiated_by"] == "user"
    notice = await bus.notice(user.id, "deletion_requested")
    assert notice["params"]["request_id"] == request_id
    if running("notifier"):  # the notifier keeps the link only until its email went
        await _secrets_dropped(settings, notice["notice_id"])
    listed = (await client.get(f"{API}/me/deletion-requests", headers=user.headers)).json()
    assert [d["status"] for d in listed] == ["requested"]
    cancelled = await client.post(
        f"{API}/me/deletion-requests/{request_id}/cancel", headers=user.headers
    )
    assert cancelled.json()["status"] == "cancelled"
    await bus.event("deletion.cancelled.", user.id, request_id=request_id)
    assert (await client.get(f"{API}/me", headers=user.headers)).status_code == 200
    # The mailed link is spent by the cancel: it tells that the request is cancelled
    # (the person opening it from the email learns what they already did)...
    spent = await client.post(
        f"{API}/deletion-cancellations", json={"token": notice["params"]["token"]}
    )
    assert spent.status_code == 409, spent.text
    assert spent.json()["type"].endswith("/link-used")
    assert "deletion is cancelled" in spent.json()["detail"]
    # A new request's link cancels it, signed out (the page it opens: tests/browser).
    second = await client.post(
        f"{API}/me/deletion-requests", json={"password": user.password}, headers=user.headers
    )
    second_id = second.json()["id"]
    # ...and cannot touch a later request, nor say the account is safe while it runs.
    dead = await client.post(
        f"{API}/deletion-cancellations", json={"token": notice["params"]["token"]}
    )
    assert dead.status_code == 400, dead.text
    assert dead.json()["type"].endswith("/link-invalid")
    [record] = await bus.wait_for(
        lambda r: r.key == user.id and r.value is not None
        and r.value["type"].startswith("notice.send.")
        and r.value["data"]["params"].get("request_id") == second_id
        and "token" in r.value["data"]["params"]  # the email's; the inbox's has none
    )  # fmt: skip
    assert record.value is not None
    mailed = record.value["data"]
    by_link = await client.post(
        f"{API}/deletion-cancellations", json={"token": mailed["params"]["token"]}
    )
    assert by_link.status_code == 200, by_link.text
    assert (by_link.json()["id"], by_link.json()["status"]) == (second_id, "cancelled")
    await bus.event("deletion.cancelled.", user.id, request_id=second_id)
    # The same link again (the answer was lost on the way): cancelled, not invalid.
    retried = await client.post(
        f"{API}/deletion-cancellations", json={"token": mailed["params"]["token"]}
    )
    assert retried.status_code == 409, retried.text
    assert retried.json()["type"].endswith("/link-used")
    cancelled_events = [
        r for r in bus.records
        if r.key == user.id and r.value is not None
        and r.value["type"].startswith("deletion.cancelled.")
        and r.value["data"]["request_id"] == second_id
    ]  # fmt: skip
    assert len(cancelled_events) == 1  # the retry cancelled nothing again


@pytest.mark.promise("P-15")
async def test_once_the_grace_period_ended_a_cancel_is_refused(
    client: httpx.AsyncClient, bus: BusTail, settings: PlatformSettings
) -> None:
    """The deletion service announces the end of grace (stage ``holds``); the worker
    closes the cancel window and confirms, and the API answers a later cancel 409."""
    user = await active_user(client, bus)
    asked = await client.post(
        f"{API}/me/deletion-requests", json={"password": user.password}, headers=user.headers
    )
    request_id = asked.json()["id"]
    ended = DeletionStageChanged(
        request_id=uuid.UUID(request_id),
        subject_id=uuid.UUID(user.id),
        stage="holds",
        entered_at=datetime.now(UTC),
    )
    await publish(settings, ended, source="deletion", subject=user.id)
    await bus.event("deletion.confirmed.", user.id, request_id=request_id)
    listed = (await client.get(f"{API}/me/deletion-requests", headers=user.headers)).json()
    assert [(d["id"], d["status"]) for d in listed] == [(request_id, "confirmed")]

    cancel = await client.post(
        f"{API}/me/deletion-requests/{request_id}/cancel", headers=user.headers
    )
    assert cancel.status_code == 409, cancel.text
    notice = await bus.notice(user.id, "deletion_requested")
    by_link = await client.post(
        f"{API}/deletion-cancellations", json={"token": notice["params"]["token"]}
    )
    assert by_link.status_code == 409, by_link.text
    assert cancel.headers["content-type"].startswith("application/problem+json")
    assert cancel.json()["type"].endswith("/deletion-not-cancellable")
    # Asking again while it is under way answers the same request, not a second one.
    again = await client.post(
        f"{API}/me/deletion-requests", json={"password": user.password}, headers=user.headers
    )
    assert (again.json()["id"], again.json()["status"]) == (request_id, "confirmed")
    assert not [
        r for r in bus.records
        if r.key == user.id and r.value is not None
        and r.value["type"].startswith("deletion.cancelled.")
    ]  # fmt: skip


async def test_erasure_removes_the_subject_tombstones_the_card_and_answers_once(
    client: httpx.AsyncClient, bus: BusTail, db: asyncpg.Connection, settings: PlatformSettings
) -> None:
    user = await active_user(client, bus)
    await client.post(
        f"{API}/me/devices",
        json={"model": "Phone D", "damage_state": "water"},
        headers=user.headers,
    )
    await client.post(
        f"{API}/me/requests",
        json={"category": "privacy", "text": "delete me"},
        headers=user.headers,
    )
    uid = uuid.UUID(user.id)
    request_id = uuid.uuid4()
    # The deletion service's command, as it will publish it (that service is not built yet).
    producer = reliable_producer(settings)
    await producer.start()
    try:
        for _ in range(2):  # the deletion service retries: the same request twice
            envelope = envelope_for(
                EraseSubject(request_id=request_id, subject_id=uid),
                source="deletion",
                subject=user.id,
            )
            await producer.send_and_wait(
                "deletion.commands", encode_envelope(envelope), key=envelope.key()
            )
    finally:
        await producer.stop()
    receipts = await bus.wait_for(
        lambda r: (
            r.topic == "deletion.receipts"
            and r.key == user.id
            and r.value is not None
            and r.value["data"]["store"] == "accounts"
        ),  # other stores answer too
        count=2,
    )
    # At-least-once on the wire: a receipt may arrive twice, always with the same id.
    distinct = {r.value["id"]: r.value["data"] for r in receipts if r.value is not None}
    assert len(distinct) == 2, [r.value for r in receipts]
    first, second = distinct.values()
    assert first["request_id"] == str(request_id)
    assert first["store"] == "accounts"
    assert first["erased"]["users"] == 1
    assert first["erased"]["devices"] == 1
    assert first["erased"]["requests"] == 1
    assert first["erased"]["request_messages"] == 1
    assert sum(second["erased"].values()) == 1  # only the (idempotent) tombstone again
    tombstones = await bus.wait_for(
        lambda r: r.topic == "accounts.contacts" and r.key == user.id and r.value is None
    )
    assert tombstones
    for table, column in (
        ("users", "id"),
        ("devices", "user_id"),
        ("requests", "user_id"),
        ("sessions", "principal_id"),
    ):
        assert await db.fetchval(f"SELECT count(*) FROM {table} WHERE {column} = $1", uid) == 0
    assert (await client.get(f"{API}/me", headers=user.headers)).status_code == 401
    login = await client.post(
        f"{API}/sessions", json={"email": user.email, "password": user.password}
    )
    assert login.status_code == 401
