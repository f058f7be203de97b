"""Requests racing each other on one user's rows: each is answered 4xx or carried out,
never a 500, and a password reset is never undone by a request that checked the old
password. The race is made certain, not hoped for: this test holds the row the request
will wait on, and changes what it would find, before letting it go."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable

import asyncpg
import httpx
import pytest

from deploy.local import services
from deploy.local.layout import Layout
from services.accounts.answer_floor import ANSWER_FLOOR_SECONDS
from services.accounts.config import AccountsSettings
from services.accounts.security import hash_password
from tests.e2e.accounts.support import (
    API,
    BusTail,
    User,
    active_user,
    admin,
    new_operator,
    unique_email,
)

LOCKED = "SELECT 1 FROM users WHERE id = $1 FOR UPDATE"
WAITING_SECONDS = 1.0  # for the request to check the password and reach the held row
API_PROCESS = "accounts-api"


async def _waiting(request: Awaitable[httpx.Response]) -> asyncio.Task[httpx.Response]:
    task = asyncio.ensure_future(request)
    await asyncio.sleep(WAITING_SECONDS)
    assert not task.done(), task.result().text  # it waits on the row this test holds
    return task


def _requests(
    client: httpx.AsyncClient, user: User
) -> dict[str, Callable[[], Awaitable[httpx.Response]]]:
    """The three changes an access token may make only with the password given again."""
    return {
        "password": lambda: client.post(
            f"{API}/me/password",
            json={"current_password": user.password, "new_password": f"pw-{uuid.uuid4().hex}"},
            headers=user.headers,
        ),
        "email": lambda: client.patch(
            f"{API}/me",
            json={"email": unique_email("taker"), "current_password": user.password},
            headers=user.headers,
        ),
        "deletion": lambda: client.post(
            f"{API}/me/deletion-requests", json={"password": user.password}, headers=user.headers
        ),
    }


@pytest.mark.promise("P-08")
@pytest.mark.parametrize("change", ["password", "email", "deletion"])
async def test_a_change_that_checked_the_old_password_is_refused_after_a_reset(
    client: httpx.AsyncClient, db: asyncpg.Connection, bus: BusTail, change: str
) -> None:
    """Whoever holds a session and the password asks for a change; the owner's reset
    commits while it hashes. The change must not commit: it would overwrite the owner's
    new password (and hand its asker a new session), or queue the asker's address."""
    user = await active_user(client, bus)
    uid = uuid.UUID(user.id)
    owners = await hash_password(f"owners-{uuid.uuid4().hex}")
    async with db.transaction():
        await db.execute(LOCKED, uid)
        task = await _waiting(_requests(client, user)[change]())
        # What a reset commits (services/accounts/routes/password_reset.py): a new hash,
        # every session ended.
        await db.execute("UPDATE users SET password_hash = $2 WHERE id = $1", uid, owners)
        await db.execute(
            "UPDATE sessions SET revoked_at = now() WHERE principal_id = $1 AND revoked_at IS NULL",
            uid,
        )
    answer = await task
    assert answer.status_code == 401, answer.text
    assert answer.json()["type"].endswith("/unauthorised")
    row = await db.fetchrow("SELECT password_hash, pending_email FROM users WHERE id = $1", uid)
    assert row is not None
    assert row["password_hash"] == owners
    assert row["pending_email"] is None
    assert not await db.fetchval("SELECT count(*) FROM deletion_requests WHERE user_id = $1", uid)
    assert not await db.fetchval(
        "SELECT count(*) FROM sessions WHERE principal_id = $1 AND revoked_at IS NULL", uid
    )


async def test_the_same_changes_go_through_when_nothing_changed_meanwhile(
    client: httpx.AsyncClient, db: asyncpg.Connection, bus: BusTail
) -> None:
    """The control: held the same way, then let go unchanged, each is carried out."""
    for change, expected in (("email", 200), ("deletion", 202), ("password", 200)):
        user = await active_user(client, bus)
        async with db.transaction():
            await db.execute(LOCKED, uuid.UUID(user.id))
            task = await _waiting(_requests(client, user)[change]())
        answer = await task
        assert answer.status_code == expected, (change, answer.text)


async def test_a_reset_completed_while_its_link_is_revoked_is_refused_not_deadlocked(
    client: httpx.AsyncClient, db: asyncpg.Connection, bus: BusTail
) -> None:
    """A password change (or a confirmed address) holds the user's row and revokes the
    unused reset links; a completion of one of them at that moment used to hold the
    link and wait for the row: a deadlock, answered 500. It now waits for the row first
    and finds its link revoked."""
    user = await active_user(client, bus)
    uid = uuid.UUID(user.id)
    asked = await client.post(f"{API}/password-resets", json={"email": user.email})
    assert asked.status_code == 202
    notice = await bus.notice(user.id, "password_reset")
    token = notice["params"]["token"]
    complete = {"token": token, "new_password": f"pw-{uuid.uuid4().hex}"}
    async with db.transaction():
        await db.execute(LOCKED, uid)
        task = await _waiting(client.post(f"{API}/password-resets/complete", json=complete))
        # What a password change does under the row's lock (store.revoke_password_resets).
        await db.execute(
            "DELETE FROM action_tokens WHERE user_id = $1 AND purpose = 'password_reset'"
            " AND used_at IS NULL",
            uid,
        )
    answer = await task
    assert answer.status_code == 400, answer.text
    assert answer.json()["type"].endswith("/link-invalid")


async def test_a_reset_asked_for_while_the_row_is_held_is_answered_without_waiting(
    client: httpx.AsyncClient, db: asyncpg.Connection, bus: BusTail
) -> None:
    """Answers to a registered address must not queue behind one another (their timing
    would tell it is registered): while the row stays held (an export reads it), the
    request is answered and the reset recorded; the worker mails its link once the row
    is free, once. Nothing waits in the API process: it is restarted meanwhile (when
    this session runs it), as a deployment rolling its replicas would."""
    user = await active_user(client, bus)
    uid = uuid.UUID(user.id)
    links = "SELECT count(*) FROM action_tokens WHERE user_id = $1 AND purpose = 'password_reset'"
    pending = "SELECT count(*) FROM pending_resets WHERE user_id = $1"
    async with db.transaction():
        await db.execute(LOCKED, uid)
        held = await asyncio.wait_for(
            client.post(f"{API}/password-resets", json={"email": user.email}), timeout=10
        )
        assert held.status_code == 202
        assert held.elapsed.total_seconds() >= ANSWER_FLOOR_SECONDS  # the floor holds
        assert await db.fetchval(links, uid) == 0  # not yet: the row is still held
        assert await db.fetchval(pending, uid) == 1  # recorded, committed: not in memory
        await _restart_accounts_api()
        await asyncio.sleep(2 * AccountsSettings(environment="test").accounts_pending_reset_seconds)
        assert await db.fetchval(pending, uid) == 1  # the worker's rounds skip a held row
    notice = await bus.notice(user.id, "password_reset")  # mailed once it was free
    assert notice["params"]["token"]
    assert await db.fetchval(links, uid) == 1
    assert await db.fetchval(pending, uid) == 0  # gone with the mail
    again = await client.post(f"{API}/password-resets", json={"email": user.email})
    assert again.status_code == 202
    assert await db.fetchval(links, uid) == 1  # the interval holds for the late mail too


async def _restart_accounts_api() -> None:
    """Stop the accounts API and start it again, if this test session runs it."""
    layout = Layout.from_env()
    if services.make_run_active(layout) or services.running(layout, API_PROCESS) is None:
        return  # make run's, or none: the record above is what a restart would keep
    await asyncio.to_thread(services.stop_processes, [API_PROCESS], layout)
    await asyncio.to_thread(services.ensure_processes, [API_PROCESS], layout)
    await asyncio.to_thread(services.wait_for_apis, ["accounts"], layout)


async def _device(client: httpx.AsyncClient, user: User) -> str:
    made = await client.post(
        f"{API}/me/devices",
        json={"model": "Phone 12", "damage_state": "cracked_screen"},
        headers=user.headers,
    )
    assert made.status_code == 201, made.text
    device_id: str = made.json()["id"]
    return device_id


async def _request(client: httpx.AsyncClient, user: User) -> str:
    made = await client.post(
        f"{API}/me/requests", json={"category": "repair", "text": "screen"}, headers=user.headers
    )
    assert made.status_code == 201, made.text
    request_id: str = made.json()["id"]
    return request_id


@pytest.mark.parametrize("item", ["device", "request"])
async def test_an_item_deleted_while_being_edited_is_not_found_not_a_500(
    client: httpx.AsyncClient, db: asyncpg.Connection, bus: BusTail, item: str
) -> None:
    """A double click: the edit of a device (or a message added to a request) races its
    deletion. The deletion commits first; the edit answers 404."""
    user = await active_user(client, bus)
    if item == "device":
        item_id = await _device(client, user)
        delete = "DELETE FROM devices WHERE id = $1"
        edit = client.patch(
            f"{API}/me/devices/{item_id}", json={"model": "Phone 13"}, headers=user.headers
        )
    else:
        item_id = await _request(client, user)
        delete = "DELETE FROM requests WHERE id = $1"
        edit = client.post(
            f"{API}/me/requests/{item_id}/messages", json={"text": "any news?"},
            headers=user.headers,
        )  # fmt: skip
    async with db.transaction():
        await db.execute(delete, uuid.UUID(item_id))  # holds the row until it commits
        task = await _waiting(edit)
    answer = await task
    assert answer.status_code == 404, answer.text


@pytest.mark.promise("P-15")
@pytest.mark.parametrize("change", ["disabled", "roles"])
async def test_an_operators_login_racing_a_disabling_or_new_roles_gets_no_old_session(
    client: httpx.AsyncClient, db: asyncpg.Connection, change: str
) -> None:
    """The login verifies the password (slow), then opens a session: a disabling or a
    role change committed in between must not leave it a session with what was taken
    away. The login waits for the operator's row and reads it again."""
    operator = await new_operator(client, await admin(client), "support", "privacy_officer")
    row = "SELECT 1 FROM operators WHERE id = $1 FOR UPDATE"
    async with db.transaction():
        await db.execute(row, uuid.UUID(operator.id))
        login = await _waiting(
            client.post(
                f"{API}/operator/sessions",
                json={"email": operator.email, "password": operator.password},
            )
        )
        if change == "disabled":
            await db.execute(
                "UPDATE operators SET disabled_at = now() WHERE id = $1", uuid.UUID(operator.id)
            )
        else:
            await db.execute(
                "UPDATE operators SET roles = '{support}' WHERE id = $1", uuid.UUID(operator.id)
            )
    answer = await login
    if change == "disabled":
        assert answer.status_code == 401, answer.text
        return
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    audit = await client.get(
        f"{API}/operator/audit",
        params={"operator_id": operator.id},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert audit.status_code == 403, audit.text  # a privacy officer's, not support's
