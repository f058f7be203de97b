"""Operator identities end to end (P-15, P-07): an operator created by another sets
their own password before anything else, so no admin acts alone through identities of
their making; admins disable operators and change their roles, which ends their
sessions at once; an operator's deletion request waits for approval one at a time,
can be withdrawn or rejected, and expires; the audit log reads a page at a time."""

from __future__ import annotations

import uuid
from typing import Any

import asyncpg
import httpx
import pytest

from services.accounts.config import AccountsSettings
from tests.e2e.accounts.support import (
    API,
    BusTail,
    Operator,
    active_user,
    luhn_card,
    new_operator,
    operator_token,
    provisional_operator,
    set_own_password,
)
from tests.e2e.platform.journeys import needs


def _slug(response: httpx.Response) -> str:
    slug: str = response.json()["type"].rsplit("/", 1)[-1]
    return slug


async def _ask_deletion(
    client: httpx.AsyncClient, operator: Operator, user_id: str
) -> httpx.Response:
    return await client.post(
        f"{API}/operator/users/{user_id}/deletion-requests",
        json={"reason": "the user asked by phone", "password": operator.password},
        headers=operator.headers,
    )


async def _approve(
    client: httpx.AsyncClient, operator: Operator, request_id: str
) -> httpx.Response:
    return await client.post(
        f"{API}/operator/deletion-requests/{request_id}/approve",
        json={"password": operator.password},
        headers=operator.headers,
    )


async def _close(
    client: httpx.AsyncClient, operator: Operator, request_id: str, how: str
) -> httpx.Response:
    return await client.post(
        f"{API}/operator/deletion-requests/{request_id}/{how}",
        json={"reason": "asked in error, ticket OPS-7"},
        headers=operator.headers,
    )


async def _audit(
    db: asyncpg.Connection, subject: str, operator: str | None = None
) -> list[tuple[Any, ...]]:
    rows = await db.fetch(
        "SELECT operator_id, action, fields, purpose FROM audit_log WHERE subject_id = $1"
        " AND ($2::uuid IS NULL OR operator_id = $2) AND action = 'change' ORDER BY id",
        uuid.UUID(subject),
        None if operator is None else uuid.UUID(operator),
    )
    return [(str(r["operator_id"]), r["action"], list(r["fields"]), r["purpose"]) for r in rows]


@pytest.mark.promise("P-15")
async def test_an_operator_created_by_another_sets_their_own_password_before_anything_else(
    client: httpx.AsyncClient, bus: BusTail, root: Operator, db: asyncpg.Connection
) -> None:
    needs("deletion")  # the deletion service's API refuses the provisional identity too
    made = await provisional_operator(client, root, "privacy_officer", "support")
    user = await active_user(client, bus)
    for method, path, body in (
        ("GET", f"{API}/operator/stats", None),
        ("GET", f"{API}/operator/audit", None),
        ("POST", f"{API}/operator/users/{user.id}/deletion-requests",
         {"reason": "the user asked by phone", "password": made.password}),
    ):  # fmt: skip
        refused = await client.request(method, path, json=body, headers=made.headers)
        assert refused.status_code == 403, (path, refused.text)
        assert _slug(refused) == "password-change-required", path
    # Its token carries no role: the other APIs refuse it too.
    elsewhere = await client.get("/api/deletion/operator/pipeline", headers=made.headers)
    assert elsewhere.status_code == 403, elsewhere.text

    change = f"{API}/operator/me/password"
    wrong = await client.post(
        change,
        json={"current_password": "not-the-password", "new_password": "mine-1234567"},
        headers=made.headers,
    )
    assert (wrong.status_code, _slug(wrong)) == (403, "reauthentication-failed")
    same = await client.post(
        change,
        json={"current_password": made.password, "new_password": made.password},
        headers=made.headers,
    )
    assert (same.status_code, _slug(same)) == (422, "password-unchanged")

    chosen_by_creator, provisional_headers = made.password, made.headers
    await set_own_password(client, made)
    # The provisional session ended; the new one has the roles.
    ended = await client.get(f"{API}/operator/stats", headers=provisional_headers)
    assert ended.status_code == 401
    assert (await client.get(f"{API}/operator/stats", headers=made.headers)).status_code == 200
    # The creator's password no longer opens the identity.
    old = await client.post(
        f"{API}/operator/sessions", json={"email": made.email, "password": chosen_by_creator}
    )
    assert old.status_code == 401
    set_at = await db.fetchval(
        "SELECT password_set_at FROM operators WHERE id = $1", uuid.UUID(made.id)
    )
    assert set_at is not None
    ((who, action, fields, purpose),) = await _audit(db, made.id)
    assert (who, action, fields) == (made.id, "change", ["password"])
    assert "replacing the one chosen by the operator who created" in purpose


@pytest.mark.promise("P-15")
async def test_an_admin_cannot_delete_a_user_through_two_identities_of_their_making(
    client: httpx.AsyncClient, bus: BusTail, root: Operator, db: asyncpg.Connection
) -> None:
    """The reviewer's path: an admin creates a support and a privacy officer, choosing
    both passwords, then requests as one and approves as the other."""
    admin = await new_operator(client, root, "admin")
    support = await provisional_operator(client, admin, "support")
    officer = await provisional_operator(client, admin, "privacy_officer")
    user = await active_user(client, bus)
    asked = await _ask_deletion(client, support, user.id)
    assert (asked.status_code, _slug(asked)) == (403, "password-change-required"), asked.text
    # Nor does the made officer approve anyone's request.
    requester = await new_operator(client, root, "support")
    waiting = await _ask_deletion(client, requester, user.id)
    assert waiting.status_code == 202, waiting.text
    approved = await _approve(client, officer, waiting.json()["id"])
    assert (approved.status_code, _slug(approved)) == (403, "password-change-required")
    statuses = await db.fetch(
        "SELECT status FROM deletion_requests WHERE user_id = $1", uuid.UUID(user.id)
    )
    assert [r["status"] for r in statuses] == ["pending_approval"]


@pytest.mark.promise("P-15")
async def test_an_admin_cannot_delete_a_user_through_two_identities_they_took_over(
    client: httpx.AsyncClient, bus: BusTail, root: Operator, other_root: Operator
) -> None:
    """The admin chose both first passwords, so nothing stops them from logging in as
    each identity and setting its "own" password too: the identities then look like two
    people. Siblings share their creator, and no approval passes between them; an
    operator of the other first admin's line approves."""
    admin = await new_operator(client, root, "admin")
    support = await new_operator(client, admin, "support")  # the admin "sets their own"
    officer = await new_operator(client, admin, "privacy_officer")
    user = await active_user(client, bus)
    asked = await _ask_deletion(client, support, user.id)
    assert asked.status_code == 202, asked.text
    sibling = await _approve(client, officer, asked.json()["id"])
    assert (sibling.status_code, _slug(sibling)) == (403, "four-eyes"), sibling.text
    cousin = await new_operator(
        client, await new_operator(client, root, "admin"), "privacy_officer"
    )
    refused = await _approve(client, cousin, asked.json()["id"])  # the lines meet at root
    assert (refused.status_code, _slug(refused)) == (403, "four-eyes"), refused.text
    other_line = await new_operator(client, other_root, "privacy_officer")
    approved = await _approve(client, other_line, asked.json()["id"])
    assert (approved.status_code, approved.json()["status"]) == (200, "requested")
    await bus.event("deletion.requested.", user.id, request_id=asked.json()["id"])


@pytest.mark.promise("P-09")
async def test_an_operator_identity_whose_email_holds_a_card_number_is_not_made(
    client: httpx.AsyncClient, root: Operator
) -> None:
    # Sealed, the address would still be kept: refused as a sign-up's is.
    card = luhn_card()
    dashed = "-".join(card[i : i + 4] for i in range(0, 16, 4))
    for email in (f"{card}@example.com", f"{dashed}@example.com"):
        identity = {"email": email, "password": f"op-{uuid.uuid4().hex}", "roles": ["support"]}
        refused = await client.post(
            f"{API}/operator/operators", json=identity, headers=root.headers
        )
        assert refused.status_code == 422, refused.text
        assert _slug(refused) == "card-number"
        assert [e["location"] for e in refused.json()["errors"]] == ["body.email"]
        assert card not in refused.text  # never echoed
        assert dashed not in refused.text
        login = await client.post(
            f"{API}/operator/sessions",
            json={"email": email, "password": identity["password"]},
        )
        assert login.status_code == 401, login.text  # no identity was made


@pytest.mark.promise("P-07")
async def test_an_operator_disabled_by_hand_is_refused_at_once(
    client: httpx.AsyncClient, root: Operator, db: asyncpg.Connection
) -> None:
    officer = await new_operator(client, root, "privacy_officer")
    assert (await client.get(f"{API}/operator/stats", headers=officer.headers)).status_code == 200
    await db.execute(
        "UPDATE operators SET disabled_at = now() WHERE id = $1", uuid.UUID(officer.id)
    )
    # Not up to 300 s later, when the access token expires: now.
    refused = await client.get(f"{API}/operator/stats", headers=officer.headers)
    assert refused.status_code == 401, refused.text


@pytest.mark.promise("P-07")
async def test_admins_change_roles_and_disable_operators_ending_their_sessions(
    client: httpx.AsyncClient, root: Operator, db: asyncpg.Connection
) -> None:
    boss = await new_operator(client, root, "admin")
    support = await new_operator(client, root, "support")
    reason = "moved to the analytics team, ticket OPS-12"
    changed = await client.put(
        f"{API}/operator/operators/{support.id}/roles",
        json={"roles": ["analyst"], "reason": reason},
        headers=boss.headers,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json() == {
        "id": support.id, "roles": ["analyst"], "own_password": True, "disabled_at": None,
    }  # fmt: skip
    # The token with the old roles ends at once; a new login carries the new ones.
    ended = await client.get(f"{API}/operator/requests", headers=support.headers)
    assert ended.status_code == 401
    support.access = await operator_token(client, support.email, support.password)
    assert (await client.get(f"{API}/operator/stats", headers=support.headers)).status_code == 200
    assert (
        await client.get(f"{API}/operator/requests", headers=support.headers)
    ).status_code == 403

    gone = "left the company, ticket OPS-13"
    disabled = await client.post(
        f"{API}/operator/operators/{support.id}/disable",
        json={"reason": gone},
        headers=boss.headers,
    )
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["disabled_at"] is not None
    assert (await client.get(f"{API}/operator/stats", headers=support.headers)).status_code == 401
    login = await client.post(
        f"{API}/operator/sessions", json={"email": support.email, "password": support.password}
    )
    assert login.status_code == 401
    open_sessions = await db.fetchval(
        "SELECT count(*) FROM sessions WHERE principal_id = $1 AND revoked_at IS NULL",
        uuid.UUID(support.id),
    )
    assert open_sessions == 0
    again = await client.post(
        f"{API}/operator/operators/{support.id}/disable",
        json={"reason": gone},
        headers=boss.headers,
    )
    assert (again.status_code, _slug(again)) == (409, "operator-disabled")
    own = await client.post(
        f"{API}/operator/operators/{boss.id}/disable", json={"reason": gone}, headers=boss.headers
    )
    assert (own.status_code, _slug(own)) == (403, "own-identity")
    assert await _audit(db, support.id, boss.id) == [
        (boss.id, "change", ["roles"], reason),
        (boss.id, "change", ["disabled_at"], gone),
    ]


@pytest.mark.promise("P-15")
async def test_one_deletion_request_waits_per_user_and_it_can_be_withdrawn_or_rejected(
    client: httpx.AsyncClient, bus: BusTail, root: Operator, db: asyncpg.Connection
) -> None:
    user = await active_user(client, bus)
    support = await new_operator(client, root, "support")
    officer = await new_operator(client, root, "privacy_officer")
    other_officer = await new_operator(client, root, "privacy_officer")

    first = await _ask_deletion(client, support, user.id)
    assert first.status_code == 202, first.text
    first_id = first.json()["id"]
    second = await _ask_deletion(client, officer, user.id)
    assert (second.status_code, _slug(second)) == (409, "deletion-request-pending")
    assert first_id in second.json()["detail"]

    not_theirs = await _close(client, officer, first_id, "withdraw")
    assert (not_theirs.status_code, _slug(not_theirs)) == (403, "not-requester")
    withdrawn = await _close(client, support, first_id, "withdraw")
    assert withdrawn.status_code == 200, withdrawn.text
    assert withdrawn.json()["status"] == "withdrawn"
    assert (await _approve(client, officer, first_id)).status_code == 404

    again = await _ask_deletion(client, officer, user.id)
    assert again.status_code == 202, again.text
    again_id = again.json()["id"]
    own = await _close(client, officer, again_id, "reject")
    assert (own.status_code, _slug(own)) == (403, "own-request")
    rejected = await _close(client, other_officer, again_id, "reject")
    assert rejected.status_code == 200, rejected.text
    assert rejected.json()["status"] == "rejected"
    assert (await _approve(client, other_officer, again_id)).status_code == 404

    # The user was never told of either, and has none to cancel.
    assert (await client.get(f"{API}/me/deletion-requests", headers=user.headers)).json() == []
    # Each request, withdrawal and rejection is in the chain, naming who and which; the
    # request refused as a second one waiting left no row.
    closing = [row for row in await _audit(db, user.id) if row[2] == ["deletion_request"]]
    assert [(who, purpose.split(": ")[0]) for who, _, _, purpose in closing] == [
        (support.id, f"operator deletion, request {first_id} requested"),
        (support.id, f"operator deletion, request {first_id} withdrawn"),
        (officer.id, f"operator deletion, request {again_id} requested"),
        (other_officer.id, f"operator deletion, request {again_id} rejected"),
    ]


@pytest.mark.promise("P-15")
async def test_an_approval_after_the_expiry_is_refused_and_the_deletion_can_be_asked_again(
    client: httpx.AsyncClient,
    bus: BusTail,
    root: Operator,
    other_root: Operator,
    db: asyncpg.Connection,
) -> None:
    days = AccountsSettings().accounts_operator_deletion_approval_days
    user = await active_user(client, bus)
    support = await new_operator(client, root, "support")
    officer = await new_operator(client, other_root, "privacy_officer")

    async def age(request_id: str) -> None:
        await db.execute(
            "UPDATE deletion_requests SET created_at = now() - make_interval(days => $2)"
            " WHERE id = $1",
            uuid.UUID(request_id),
            days,
        )

    asked = await _ask_deletion(client, support, user.id)
    assert asked.status_code == 202, asked.text
    await age(asked.json()["id"])
    late = await _approve(client, officer, asked.json()["id"])
    assert (late.status_code, _slug(late)) == (410, "deletion-request-expired"), late.text
    status = "SELECT status FROM deletion_requests WHERE id = $1"
    assert await db.fetchval(status, uuid.UUID(asked.json()["id"])) == "expired"
    assert (await _approve(client, officer, asked.json()["id"])).status_code == 404

    # Asked again; one left waiting past the expiry gives way to a new one too.
    again = await _ask_deletion(client, support, user.id)
    assert again.status_code == 202, again.text
    await age(again.json()["id"])
    latest = await _ask_deletion(client, support, user.id)
    assert latest.status_code == 202, latest.text
    assert await db.fetchval(status, uuid.UUID(again.json()["id"])) == "expired"
    approved = await _approve(client, officer, latest.json()["id"])
    assert (approved.status_code, approved.json()["status"]) == (200, "requested")
    await bus.event("deletion.requested.", user.id, request_id=latest.json()["id"])


@pytest.mark.promise("P-07")
async def test_the_audit_log_is_read_a_page_at_a_time_to_its_end(
    client: httpx.AsyncClient, bus: BusTail, root: Operator, db: asyncpg.Connection
) -> None:
    user = await active_user(client, bus)
    support = await new_operator(client, root, "support")
    officer = await new_operator(client, root, "privacy_officer")
    for _ in range(5):
        read = await client.get(
            f"{API}/operator/users/{user.id}",
            params={"purpose": "paging test: answering the user's ticket"},
            headers=support.headers,
        )
        assert read.status_code == 200, read.text
    pages: list[list[int]] = []
    response = await client.get(
        f"{API}/operator/audit", params={"subject_id": user.id, "limit": 2}, headers=officer.headers
    )
    while True:
        assert response.status_code == 200, response.text
        pages.append([row["id"] for row in response.json()])
        following = response.links.get("next")
        if following is None:
            break
        response = await client.get(
            response.request.url.join(following["url"]), headers=officer.headers
        )
    assert [len(page) for page in pages] == [2, 2, 1]
    ids = [i for page in pages for i in page]
    stored = await db.fetch(
        "SELECT id FROM audit_log WHERE subject_id = $1 ORDER BY id", uuid.UUID(user.id)
    )
    assert ids == [r["id"] for r in stored]
    after = await client.get(
        f"{API}/operator/audit",
        params={"subject_id": user.id, "after_id": ids[3]},
        headers=officer.headers,
    )
    assert [row["id"] for row in after.json()] == [ids[4]]
    assert "link" not in after.headers
    # after_id=0 (deprecated, as clients started paging with it) is the first page still.
    start = await client.get(
        f"{API}/operator/audit",
        params={"subject_id": user.id, "after_id": 0, "limit": 2},
        headers=officer.headers,
    )
    assert start.status_code == 200, start.text
    assert [row["id"] for row in start.json()] == pages[0]
