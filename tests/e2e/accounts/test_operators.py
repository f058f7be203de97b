"""Operators: need-to-know roles, audited reads and changes (promises P-07, P-24)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest

from deploy.local.layout import Layout
from shared.config import PlatformSettings
from tests.e2e.accounts.support import (
    API,
    BusTail,
    Operator,
    active_user,
    new_operator,
    publish_policy,
    unique,
    unique_email,
)
from tests.e2e.platform.journeys import needs
from tests.support.mailbox import eventually
from tests.support.operator_routes import operator_routes, template_matches

REPO = Path(__file__).resolve().parents[3]
ROLES = ("support", "privacy_officer", "analyst", "admin")

# The need-to-know matrix, written here independently of the code's own table.
EXPECTED: dict[str, set[str]] = {
    "search users": {"support", "privacy_officer"},
    "read user": {"support", "privacy_officer"},
    "change user": {"support"},
    "list requests": {"support"},
    "read request thread": {"support"},
    "reply to request": {"support"},
    "stats": {"analyst", "admin", "privacy_officer"},
    "read audit": {"privacy_officer", "admin"},
    "verify audit": {"privacy_officer", "admin"},
    "create operator": {"admin"},
    "unlock operator": {"admin"},
    "disable operator": {"admin"},
    "change operator roles": {"admin"},
    "publish policy": {"privacy_officer", "admin"},
    "announce": {"admin", "support"},
    "declare incident": {"privacy_officer", "admin"},
    "register recipient": {"admin"},
    "export to recipient": {"privacy_officer"},
    "request deletion": {"support", "privacy_officer"},
    "approve deletion": {"privacy_officer", "admin"},
    "withdraw deletion": {"support", "privacy_officer"},
    "reject deletion": {"privacy_officer", "admin"},
    "record invoice": {"support", "admin"},
}
PII_READS = {"search users", "read user", "read request thread"}

API_LOG = Layout.from_env().log("accounts-api")


async def _audit_rows(db: asyncpg.Connection, operator_id: str, subject_id: str) -> int:
    count: int = await db.fetchval(
        "SELECT count(*) FROM audit_log WHERE operator_id = $1 AND subject_id = $2",
        uuid.UUID(operator_id),
        uuid.UUID(subject_id),
    )
    return count


@pytest.mark.promise("P-07")
async def test_each_role_gets_exactly_its_endpoints_and_every_pii_read_is_audited(
    client: httpx.AsyncClient, bus: BusTail, root: Operator, db: asyncpg.Connection
) -> None:
    user = await active_user(client, bus)
    request = await client.post(
        f"{API}/me/requests",
        json={"category": "other", "text": "please help"},
        headers=user.headers,
    )
    request_id, uid = request.json()["id"], user.id
    purpose = {"purpose": "matrix test: answering the user's ticket"}
    # Writes go with an incomplete body: an allowed role reaches validation (422) and
    # changes nothing; a refused role is stopped before (403).
    calls: dict[str, tuple[str, str, dict[str, Any] | None, dict[str, str] | None]] = {
        "search users": ("POST", "/operator/users/search", {"email": user.email, **purpose}, None),
        "read user": ("GET", f"/operator/users/{uid}", None, purpose),
        "change user": (
            "PATCH",
            f"/operator/users/{uid}",
            {"request_reference": "REF-1", "purpose": "matrix"},
            None,
        ),
        "list requests": ("GET", "/operator/requests", None, None),
        "read request thread": ("GET", f"/operator/requests/{request_id}", None, purpose),
        "reply to request": ("POST", f"/operator/requests/{request_id}/replies", {}, None),
        "stats": ("GET", "/operator/stats", None, None),
        "read audit": ("GET", "/operator/audit", None, {"subject_id": uid}),
        "verify audit": ("GET", "/operator/audit/verify", None, None),
        "create operator": ("POST", "/operator/operators", {}, None),
        "unlock operator": ("POST", f"/operator/operators/{uuid.uuid4()}/unlock", {}, None),
        "disable operator": ("POST", f"/operator/operators/{uuid.uuid4()}/disable", {}, None),
        "change operator roles": ("PUT", f"/operator/operators/{uuid.uuid4()}/roles", {}, None),
        "publish policy": ("POST", "/operator/policy-versions", {}, None),
        "announce": ("POST", "/operator/announcements", {}, None),
        "declare incident": ("POST", "/operator/incidents", {}, None),
        "register recipient": ("POST", "/operator/recipients", {}, None),
        "export to recipient": ("POST", f"/operator/recipients/{uuid.uuid4()}/exports", None, None),
        "request deletion": ("POST", f"/operator/users/{uid}/deletion-requests", {}, None),
        "approve deletion": (
            "POST",
            f"/operator/deletion-requests/{uuid.uuid4()}/approve",
            None,
            None,
        ),
        "withdraw deletion": (
            "POST",
            f"/operator/deletion-requests/{uuid.uuid4()}/withdraw",
            {},
            None,
        ),
        "reject deletion": ("POST", f"/operator/deletion-requests/{uuid.uuid4()}/reject", {}, None),
        "record invoice": ("POST", f"/operator/users/{uid}/invoices", {}, None),
    }
    assert set(calls) == set(EXPECTED)
    # Every route of accounts that admits operators by role is in the matrix (one added
    # later fails here until it is).
    called = [(method, f"{API}{path}") for method, path, _, _ in calls.values()]
    routes = operator_routes("accounts")
    assert routes
    missing = [
        f"{method} {template}"
        for method, template in sorted(routes)
        if not any(m == method and template_matches(template, p) for m, p in called)
    ]
    assert not missing, f"operator routes the matrix never calls: {missing}"
    operators = {role: await new_operator(client, root, role) for role in ROLES}
    granted: dict[str, set[str]] = {name: set() for name in calls}
    for role, operator in operators.items():
        for name, (method, path, body, params) in calls.items():
            response = await client.request(
                method, f"{API}{path}", json=body, params=params, headers=operator.headers
            )
            assert response.status_code != 401, (role, name)
            assert response.status_code < 500, (role, name, response.text)
            if response.status_code != 403:
                granted[name].add(role)
        # One audit row per personal-data read, nothing for anything else.
        reads = sum(1 for name in PII_READS if role in EXPECTED[name])
        assert await _audit_rows(db, operator.id, uid) == reads, role
    assert granted == EXPECTED
    # Users' tokens open no operator endpoint at all.
    for _name, (method, path, body, params) in calls.items():
        response = await client.request(
            method, f"{API}{path}", json=body, params=params, headers=user.headers
        )
        assert response.status_code == 403
    # The analyst's statistics carry no personal data.
    stats = await client.get(f"{API}/operator/stats", headers=operators["analyst"].headers)
    assert user.email not in stats.text
    assert user.id not in stats.text
    row = await db.fetchrow(
        "SELECT * FROM audit_log WHERE operator_id = $1 AND subject_id = $2 ORDER BY id LIMIT 1",
        uuid.UUID(operators["support"].id),
        uuid.UUID(uid),
    )
    assert row is not None
    assert row["purpose"] == purpose["purpose"]
    assert row["action"] == "read"
    assert set(row["fields"]) >= {"name", "email"}


async def test_the_audit_log_refuses_updates_and_deletes(db: asyncpg.Connection) -> None:
    for statement in (
        "UPDATE audit_log SET purpose = 'rewritten' WHERE id = (SELECT min(id) FROM audit_log)",
        "DELETE FROM audit_log WHERE id = (SELECT min(id) FROM audit_log)",
        "TRUNCATE audit_log",
    ):
        with pytest.raises(asyncpg.InsufficientPrivilegeError, match="append-only"):
            await db.execute(statement)


@pytest.mark.promise("P-24")
async def test_a_change_on_emailed_request_and_its_audit_row_exist_together_or_not_at_all(
    client: httpx.AsyncClient, bus: BusTail, root: Operator, db: asyncpg.Connection
) -> None:
    user, other = await active_user(client, bus), await active_user(client, bus)
    support = await new_operator(client, root, "support")
    reference = unique("MAIL")
    changed = await client.patch(
        f"{API}/operator/users/{user.id}",
        json={
            "name": "Renamed By Support",
            "request_reference": reference,
            "purpose": "user asked by email to fix their name",
        },
        headers=support.headers,
    )
    assert changed.status_code == 200, changed.text
    # Only what changed comes back: the email was not asked for, so it is not shown (nor
    # read unaudited); the audit row names exactly the fields the answer holds.
    assert changed.json() == {"id": user.id, "fields": ["name"], "name": "Renamed By Support"}
    assert user.email not in changed.text
    rows = await db.fetch("SELECT * FROM audit_log WHERE request_reference = $1", reference)
    assert len(rows) == 1
    assert rows[0]["action"] == "change"
    assert list(rows[0]["fields"]) == ["name"]
    assert str(rows[0]["subject_id"]) == user.id
    assert str(rows[0]["operator_id"]) == support.id
    me = await client.get(f"{API}/me", headers=user.headers)
    assert me.json()["name"] == "Renamed By Support"
    await bus.card(user.id, name="Renamed By Support")

    # A change that cannot apply (the email belongs to someone else) changes nothing and
    # leaves no change row; the refusal told support the address has an account, so
    # that read of the other account is audited (P-07), without the address.
    failed_reference = unique("MAIL")
    refused = await client.patch(
        f"{API}/operator/users/{user.id}",
        json={
            "email": other.email,
            "name": "Should Not Stick",
            "request_reference": failed_reference,
            "purpose": "user asked by email",
        },
        headers=support.headers,
    )
    assert refused.status_code == 409
    assert refused.json()["type"].endswith("/email-unavailable")
    assert other.email not in refused.text
    rows = await db.fetch("SELECT * FROM audit_log WHERE request_reference = $1", failed_reference)
    assert [(str(r["subject_id"]), r["action"], list(r["fields"])) for r in rows] == [
        (other.id, "read", ["email"])
    ]
    assert str(rows[0]["operator_id"]) == support.id
    assert "refused" in rows[0]["purpose"]
    assert "user asked by email" in rows[0]["purpose"]
    assert other.email not in rows[0]["purpose"]
    me = await client.get(f"{API}/me", headers=user.headers)
    assert me.json()["name"] == "Renamed By Support"
    assert me.json()["email"] == user.email

    # An address set on request drops a change waiting for its link, and the link with
    # it (it may be a hijacker's).
    waiting = {"email": unique_email("waiting"), "current_password": user.password}
    assert (await client.patch(f"{API}/me", json=waiting, headers=user.headers)).is_success
    link = (await bus.notice(user.id, "verify_new_email"))["params"]["token"]
    settled = unique_email("settled")
    moved_reference = unique("MAIL")
    moved = await client.patch(
        f"{API}/operator/users/{user.id}",
        json={"email": settled, "request_reference": moved_reference, "purpose": "on request"},
        headers=support.headers,
    )
    assert moved.status_code == 200, moved.text
    # The change dropped is named in its audit row, as in its event.
    await bus.event("profile.updated.", user.id, fields=["email", "pending_email"])
    audited = await db.fetchval(
        "SELECT fields FROM audit_log WHERE request_reference = $1", moved_reference
    )
    assert list(audited) == ["email", "pending_email"]
    me = await client.get(f"{API}/me", headers=user.headers)
    assert (me.json()["email"], me.json()["pending_email"]) == (settled, None)
    used = await client.post(f"{API}/email-verifications", json={"token": link})
    assert used.status_code == 400
    assert used.json()["type"].endswith("/link-invalid")

    # A change that fails after its audit row was written leaves neither: the database
    # refuses the user's update only once that row exists in the same transaction.
    late_reference = unique("MAIL")
    name = f"fail_after_audit_{uuid.uuid4().hex[:8]}"
    await db.execute(f"""
        CREATE FUNCTION {name}() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF EXISTS (SELECT 1 FROM audit_log WHERE request_reference = '{late_reference}')
            THEN RAISE EXCEPTION 'injected failure after audit row {late_reference}';
            END IF;
            RETURN NEW;
        END $$;
        CREATE TRIGGER {name} BEFORE UPDATE ON users FOR EACH ROW
            WHEN (OLD.id = '{user.id}') EXECUTE FUNCTION {name}();
    """)  # fmt: skip
    try:
        failed = await client.patch(
            f"{API}/operator/users/{user.id}",
            json={"name": "Never Written", "request_reference": late_reference,
                  "purpose": "user asked by email"},
            headers=support.headers,
        )  # fmt: skip
    finally:
        await db.execute(f"DROP TRIGGER {name} ON users; DROP FUNCTION {name}();")
    assert failed.status_code == 500
    assert failed.headers["content-type"].startswith("application/problem+json")
    # It failed where injected, after the audit row (the API log has the cause).
    assert f"injected failure after audit row {late_reference}" in API_LOG.read_text()
    count = "SELECT count(*) FROM audit_log WHERE request_reference = $1"
    assert await db.fetchval(count, late_reference) == 0
    me = await client.get(f"{API}/me", headers=user.headers)
    assert me.json()["name"] == "Renamed By Support"


async def test_a_change_for_no_such_user_is_404_and_makes_no_key(
    client: httpx.AsyncClient, root: Operator, settings: PlatformSettings
) -> None:
    support = await new_operator(client, root, "support")
    nobody = uuid.uuid4()
    missing = await client.patch(
        f"{API}/operator/users/{nobody}",
        json={"name": "Nobody", "request_reference": unique("MAIL"), "purpose": "asked by mail"},
        headers=support.headers,
    )
    assert missing.status_code == 404, missing.text
    vault = await asyncpg.connect(settings.database_dsn("vault"))
    try:
        keys = await vault.fetchval(
            "SELECT count(*) FROM subject_keys WHERE subject_id = $1", str(nobody)
        )
    finally:
        await vault.close()
    assert keys == 0  # sealing for no one would have made one


@pytest.mark.promise("P-15")
async def test_operator_deletion_needs_a_second_different_operator(
    client: httpx.AsyncClient,
    bus: BusTail,
    root: Operator,
    other_root: Operator,
    db: asyncpg.Connection,
) -> None:
    needs("notifier")  # the user is told, in their inbox, as when they ask themselves
    user = await active_user(client, bus)
    first = await new_operator(client, root, "privacy_officer")
    second = await new_operator(client, other_root, "privacy_officer")
    # A deletion needs re-authentication: the access token alone starts nothing.
    unproven = await client.post(
        f"{API}/operator/users/{user.id}/deletion-requests",
        json={"reason": "user asked by phone", "password": "not-the-password"},
        headers=first.headers,
    )
    assert unproven.status_code == 403
    assert unproven.json()["type"].endswith("/reauthentication-failed")
    asked = await client.post(
        f"{API}/operator/users/{user.id}/deletion-requests",
        json={"reason": "user asked by phone", "password": first.password},
        headers=first.headers,
    )
    assert asked.status_code == 202
    assert asked.json()["status"] == "pending_approval"
    deletion_id = asked.json()["id"]
    alone = await client.post(
        f"{API}/operator/deletion-requests/{deletion_id}/approve",
        json={"password": first.password},
        headers=first.headers,
    )
    assert alone.status_code == 403
    assert alone.json()["type"].endswith("/four-eyes")
    # Nothing was requested by the first operator alone: not in accounts, and nothing on
    # the bus, where the deletion service would hear it. The user's own later event is
    # relayed after anything queued before it (one key, one order), so once it is seen,
    # an earlier deletion.requested would have been seen too.
    assert (await client.get(f"{API}/me/deletion-requests", headers=user.headers)).json() == []
    renamed = await client.patch(f"{API}/me", json={"name": "Still Here"}, headers=user.headers)
    assert renamed.status_code == 200
    await bus.event("profile.updated.", user.id)
    assert not [
        r
        for r in bus.records
        if r.key == user.id and r.value and r.value["type"].startswith("deletion.requested.")
    ]
    unproven = await client.post(
        f"{API}/operator/deletion-requests/{deletion_id}/approve",
        json={"password": first.password},  # someone else's
        headers=second.headers,
    )
    assert unproven.status_code == 403
    assert unproven.json()["type"].endswith("/reauthentication-failed")
    approved = await client.post(
        f"{API}/operator/deletion-requests/{deletion_id}/approve",
        json={"password": second.password},
        headers=second.headers,
    )
    assert approved.status_code == 200
    assert approved.json()["status"] == "requested"
    event = await bus.event("deletion.requested.", user.id, request_id=deletion_id)
    assert event["data"]["initiated_by"] == "operator"
    # The audit log, kept for good, names the request and both operators; the free-text
    # reason (about the user, cleared at the erasure) is not copied into it.
    audited = await db.fetch(
        "SELECT operator_id, action, purpose FROM audit_log WHERE subject_id = $1"
        " AND fields && '{deletion_request,account}' ORDER BY chain_seq",
        uuid.UUID(user.id),
    )
    assert [(str(r["operator_id"]), r["action"], r["purpose"]) for r in audited] == [
        (first.id, "change", f"operator deletion, request {deletion_id} requested"),
        (second.id, "delete",
         f"operator deletion, request {deletion_id}, requested by operator {first.id}"),
    ]  # fmt: skip
    # The user is told, with the link that cancels, as when they ask themselves.
    notice = await bus.notice(user.id, "deletion_requested")
    assert notice["params"]["request_id"] == deletion_id
    assert "/cancel-deletion#token=" in notice["params"]["link"]
    # And the notifier takes it: it reaches the user's inbox.
    titles = await eventually(
        lambda: _inbox_titles(client, user.headers),
        lambda found: DELETION_TITLE in found,
    )
    assert titles.count(DELETION_TITLE) == 1


DELETION_TITLE = "We received your request to delete your account"


async def _inbox_titles(client: httpx.AsyncClient, headers: dict[str, str]) -> list[str]:
    response = await client.get("/api/notifier/inbox", headers=headers)
    assert response.status_code == 200, response.text
    return [item["title"] for item in response.json()["items"]]


@pytest.mark.promise("P-15")
async def test_an_approval_starts_no_second_deletion_while_one_is_under_way(
    client: httpx.AsyncClient, bus: BusTail, root: Operator, other_root: Operator
) -> None:
    """A user cancelling their own request is told nothing is erased: that must stay
    true, so an operator's deletion is not started beside it, only after it."""
    user = await active_user(client, bus)
    first = await new_operator(client, root, "privacy_officer")
    second = await new_operator(client, other_root, "privacy_officer")
    mine = await client.post(
        f"{API}/me/deletion-requests", json={"password": user.password}, headers=user.headers
    )
    asked = await client.post(
        f"{API}/operator/users/{user.id}/deletion-requests",
        json={"reason": "user asked by phone", "password": first.password},
        headers=first.headers,
    )
    deletion_id = asked.json()["id"]
    refused = await client.post(
        f"{API}/operator/deletion-requests/{deletion_id}/approve",
        json={"password": second.password},
        headers=second.headers,
    )
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"].endswith("/deletion-under-way")
    assert mine.json()["id"] in refused.json()["detail"]

    cancelled = await client.post(
        f"{API}/me/deletion-requests/{mine.json()['id']}/cancel", headers=user.headers
    )
    assert cancelled.json()["status"] == "cancelled"
    approved = await client.post(
        f"{API}/operator/deletion-requests/{deletion_id}/approve",
        json={"password": second.password},
        headers=second.headers,
    )
    assert (approved.status_code, approved.json()["status"]) == (200, "requested")
    await bus.event("deletion.requested.", user.id, request_id=deletion_id)
    # One key, one order: with the approved one seen, any earlier one was seen too.
    requested = [
        r.value["data"]["request_id"] for r in bus.records
        if r.key == user.id and r.value and r.value["type"].startswith("deletion.requested.")
    ]  # fmt: skip
    assert requested == [mine.json()["id"], deletion_id]  # the refused approval sent none


@pytest.mark.promise("P-15")
async def test_no_operator_approves_a_deletion_requested_by_an_identity_of_their_making(
    client: httpx.AsyncClient, bus: BusTail, root: Operator, other_root: Operator
) -> None:
    # An admin who created an identity chose its password: requesting as it and
    # approving as themselves would be one person with two hats.
    maker = await new_operator(client, root, "admin")
    made = await new_operator(client, maker, "support")
    user = await active_user(client, bus)
    asked = await client.post(
        f"{API}/operator/users/{user.id}/deletion-requests",
        json={"reason": "user asked by phone", "password": made.password},
        headers=made.headers,
    )
    assert asked.status_code == 202, asked.text
    approve = f"{API}/operator/deletion-requests/{asked.json()['id']}/approve"
    for creator in (maker, root):  # the creator, and the creator's creator
        refused = await client.post(
            approve, json={"password": creator.password}, headers=creator.headers
        )
        assert refused.status_code == 403, refused.text
        assert refused.json()["type"].endswith("/four-eyes")
    # Nor the other way round: an identity made by the requester does not approve.
    both = await new_operator(client, root, "admin", "support")
    their_officer = await new_operator(client, both, "privacy_officer")
    other = await active_user(client, bus)
    second = await client.post(
        f"{API}/operator/users/{other.id}/deletion-requests",
        json={"reason": "user asked by phone", "password": both.password},
        headers=both.headers,
    )
    assert second.status_code == 202, second.text
    second_approve = f"{API}/operator/deletion-requests/{second.json()['id']}/approve"
    refused = await client.post(
        second_approve, json={"password": their_officer.password}, headers=their_officer.headers
    )
    assert refused.status_code == 403
    assert refused.json()["type"].endswith("/four-eyes")
    # An operator outside that line approves as before.
    officer = await new_operator(client, other_root, "privacy_officer")
    approved = await client.post(
        approve, json={"password": officer.password}, headers=officer.headers
    )
    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "requested"
    await bus.event("deletion.requested.", user.id, request_id=asked.json()["id"])


async def _lock_latest_account_counter(db: asyncpg.Connection, minutes_ago: int) -> bytes:
    """Lock the row the last failure wrote (the latest account counter), as if its 100th
    failure was ``minutes_ago``: reaching the lockout takes hours of back-off."""
    key: bytes | None = await db.fetchval(
        "SELECT key FROM login_throttle WHERE scope = 'account'"
        " ORDER BY last_failure_at DESC NULLS LAST LIMIT 1"
    )
    assert key is not None
    await _lock(db, key, minutes_ago)
    return key


async def _lock(db: asyncpg.Connection, key: bytes, minutes_ago: int) -> None:
    locked = await db.execute(
        "UPDATE login_throttle SET failures = 100, locked = true, blocked_until = NULL,"
        " last_failure_at = now() - make_interval(mins => $2) WHERE key = $1",
        key,
        minutes_ago,
    )
    assert locked == "UPDATE 1"


async def _operator_login(client: httpx.AsyncClient, operator: Operator) -> httpx.Response:
    return await client.post(
        f"{API}/operator/sessions", json={"email": operator.email, "password": operator.password}
    )


@pytest.mark.promise("P-08")
async def test_an_admin_unlocks_a_locked_operator_and_the_unlock_is_audited(
    client: httpx.AsyncClient, root: Operator, db: asyncpg.Connection
) -> None:
    locked_out = await new_operator(client, root, "support")
    wrong = await client.post(
        f"{API}/operator/sessions", json={"email": locked_out.email, "password": "nope-1234"}
    )
    assert wrong.status_code == 401
    await _lock_latest_account_counter(db, minutes_ago=0)
    refused = await _operator_login(client, locked_out)
    assert refused.status_code == 429
    assert refused.json()["type"].endswith("/login-locked")

    unlock = f"{API}/operator/operators/{locked_out.id}/unlock"
    reason = {"reason": "locked by a guesser; identity confirmed by phone"}
    support = await new_operator(client, root, "support")
    assert (await client.post(unlock, json=reason, headers=support.headers)).status_code == 403
    missing = f"{API}/operator/operators/{uuid.uuid4()}/unlock"
    assert (await client.post(missing, json=reason, headers=root.headers)).status_code == 404
    done = await client.post(unlock, json=reason, headers=root.headers)
    assert done.status_code == 204, done.text
    assert (await _operator_login(client, locked_out)).status_code == 200
    # What others did to the identity (its own row: setting its password).
    rows = await db.fetch(
        "SELECT * FROM audit_log WHERE subject_id = $1 AND operator_id <> subject_id",
        uuid.UUID(locked_out.id),
    )
    assert [(r["action"], list(r["fields"]), r["purpose"]) for r in rows] == [
        ("change", ["login_throttle"], reason["reason"])
    ]


@pytest.mark.promise("P-08")
async def test_an_operator_lock_lifts_by_itself_after_an_hour(
    client: httpx.AsyncClient, root: Operator, db: asyncpg.Connection
) -> None:
    # No operator stays locked out until someone edits the database: they have no
    # password reset, and anyone may fail logins at their address.
    operator = await new_operator(client, root, "privacy_officer")
    wrong = await client.post(
        f"{API}/operator/sessions", json={"email": operator.email, "password": "nope-1234"}
    )
    assert wrong.status_code == 401
    key = await _lock_latest_account_counter(db, minutes_ago=59)
    refused = await _operator_login(client, operator)
    assert refused.status_code == 429
    assert refused.json()["type"].endswith("/login-locked")
    assert 0 < int(refused.headers["retry-after"]) <= 60
    assert "Reset your password" not in refused.json()["detail"]
    await _lock(db, key, minutes_ago=61)
    lifted = await _operator_login(client, operator)
    assert lifted.status_code == 200, lifted.text


async def _change_own_password(
    client: httpx.AsyncClient, operator: Operator, current: str
) -> httpx.Response:
    return await client.post(
        f"{API}/operator/me/password",
        json={"current_password": current, "new_password": f"own-{uuid.uuid4().hex}"},
        headers=operator.headers,
    )


async def _lock_re_authentication(
    client: httpx.AsyncClient, db: asyncpg.Connection, operator: Operator, minutes_ago: int
) -> bytes:
    """One wrong current password writes the operator's re-authentication counter (the
    latest account counter), then locked as by a 100th failure ``minutes_ago``."""
    wrong = await _change_own_password(client, operator, "not-the-password")
    assert wrong.status_code == 403, wrong.text
    return await _lock_latest_account_counter(db, minutes_ago)


@pytest.mark.promise("P-08")
async def test_an_admin_unlock_lifts_an_operators_re_authentication_lock_too(
    client: httpx.AsyncClient, root: Operator, db: asyncpg.Connection
) -> None:
    # Whoever held the operator's token failed 100 password checks: operators have no
    # reset, so an admin must be able to give the identity its own password back.
    operator = await new_operator(client, root, "privacy_officer")
    await _lock_re_authentication(client, db, operator, minutes_ago=0)
    refused = await _change_own_password(client, operator, operator.password)
    assert refused.status_code == 429, refused.text
    assert refused.json()["type"].endswith("/login-locked")
    unlock = f"{API}/operator/operators/{operator.id}/unlock"
    reason = {"reason": "token lost, identity confirmed by phone"}
    done = await client.post(unlock, json=reason, headers=root.headers)
    assert done.status_code == 204, done.text
    changed = await _change_own_password(client, operator, operator.password)
    assert changed.status_code == 200, changed.text
    rows = await db.fetch(
        "SELECT * FROM audit_log WHERE subject_id = $1 AND operator_id <> subject_id",
        uuid.UUID(operator.id),
    )
    assert [(r["action"], list(r["fields"]), r["purpose"]) for r in rows] == [
        ("change", ["login_throttle"], reason["reason"])
    ]


@pytest.mark.promise("P-08")
async def test_an_operators_re_authentication_lock_lifts_by_itself_after_an_hour(
    client: httpx.AsyncClient, root: Operator, db: asyncpg.Connection
) -> None:
    operator = await new_operator(client, root, "support")
    key = await _lock_re_authentication(client, db, operator, minutes_ago=59)
    refused = await _change_own_password(client, operator, operator.password)
    assert refused.status_code == 429, refused.text
    assert refused.json()["type"].endswith("/login-locked")
    assert 0 < int(refused.headers["retry-after"]) <= 60
    assert "Reset your password" not in refused.json()["detail"]  # operators have none
    assert "An admin can unlock" in refused.json()["detail"]
    await _lock(db, key, minutes_ago=61)
    changed = await _change_own_password(client, operator, operator.password)
    assert changed.status_code == 200, changed.text


async def test_policy_versions_are_published_and_accepted(
    client: httpx.AsyncClient, bus: BusTail, root: Operator
) -> None:
    user = await active_user(client, bus)
    version = await publish_policy(client, root, "We clarified retention periods.")
    event = await bus.event("policy_version.published.", f"policy:{version}")
    assert event["data"]["policy_version"] == version
    current = await client.get(f"{API}/policy/current")
    assert current.status_code == 200
    accepted = await client.post(
        f"{API}/me/policy-acceptances", json={"version": version}, headers=user.headers
    )
    assert accepted.status_code == 201
    assert [
        a["version"]
        for a in (await client.get(f"{API}/me/policy-acceptances", headers=user.headers)).json()
    ] == [version]
    await bus.event("policy.accepted.", user.id, policy_version=version)
    again = await client.post(
        f"{API}/operator/policy-versions",
        json={"version": version, "summary": "dup"},
        headers=root.headers,
    )
    assert again.status_code == 409
    # Users are told of a version before it binds them: none takes effect in the past.
    backdated = await client.post(
        f"{API}/operator/policy-versions",
        json={"version": unique("v"), "summary": "late", "effective_at": "2020-01-01T00:00:00Z"},
        headers=root.headers,
    )
    assert backdated.status_code == 422, backdated.text
    # Once a later version is in force, the earlier one can no longer be accepted.
    later = await publish_policy(client, root, "Shorter retention of visit logs.")
    superseded = await client.post(
        f"{API}/me/policy-acceptances", json={"version": version}, headers=user.headers
    )
    assert superseded.status_code == 409, superseded.text
    assert superseded.json()["type"].endswith("/policy-version-superseded")
    accepted = await client.post(
        f"{API}/me/policy-acceptances", json={"version": later}, headers=user.headers
    )
    assert accepted.status_code == 201, accepted.text


async def test_incidents_and_announcements_reach_the_bus(
    client: httpx.AsyncClient, bus: BusTail, root: Operator
) -> None:
    user = await active_user(client, bus)
    incident = await client.post(
        f"{API}/operator/incidents",
        json={
            "title": "Test incident",
            "message": "A listed-only drill.",
            "audience": "listed",
            "user_ids": [user.id],
        },
        headers=root.headers,
    )
    assert incident.status_code == 201
    assert incident.json()["affected"] == 1
    event = await bus.event("incident.declared.", incident.json()["id"])
    assert event["data"]["user_ids"] == [user.id]
    assert event["data"]["audience"] == "listed"
    card = await client.post(
        f"{API}/operator/announcements",
        json={"title": "Maintenance", "message": "Card 4111 1111 1111 1111 is fine"},
        headers=root.headers,
    )
    assert card.status_code == 422  # no card numbers in announcements either


def _audit_verify() -> tuple[int, dict[str, Any]]:
    """``make audit-verify``'s command, as an auditor runs it."""
    done = subprocess.run(
        [sys.executable, "-m", "services.accounts.audit_chain"],
        cwd=REPO, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    return done.returncode, json.loads(done.stdout)


@pytest.mark.promise("P-07")
async def test_the_audit_log_is_a_hash_chain_that_kafka_vouches_for(
    client: httpx.AsyncClient, bus: BusTail, root: Operator
) -> None:
    user = await active_user(client, bus)
    support = await new_operator(client, root, "support")
    officer = await new_operator(client, root, "privacy_officer")
    read = await client.get(
        f"{API}/operator/users/{user.id}",
        params={"purpose": "chain test: answering the user's ticket"},
        headers=support.headers,
    )
    assert read.status_code == 200
    rows = await client.get(
        f"{API}/operator/audit", params={"subject_id": user.id}, headers=officer.headers
    )
    (row,) = rows.json()
    verified = (await client.get(f"{API}/operator/audit/verify", headers=officer.headers)).json()
    assert verified["intact"] is True, verified
    assert verified["head_seq"] >= row["chain_seq"]

    deadline = time.monotonic() + 30  # the relay publishes the row's link
    while True:
        code, report = await asyncio.to_thread(_audit_verify)
        if report["kafka"]["latest_seq"] >= row["chain_seq"] or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    assert (code, report["intact"]) == (0, True), report
    assert report["kafka"]["latest_seq"] >= row["chain_seq"]
