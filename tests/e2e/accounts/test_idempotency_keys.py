"""Operators' POSTs that mail people take an Idempotency-Key: a double click, or a retry
after an answer lost on the way, replays the first answer and mails no one twice
(through the gateway, on the real accounts API and PostgreSQL)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import httpx

from shared.config import PlatformSettings
from shared.observability import PROBLEM_CONTENT_TYPE
from shared.service.idempotency import REPLAYED_HEADER
from tests.e2e.accounts.support import (
    API,
    BusTail,
    Operator,
    active_user,
    erase_subject,
    new_operator,
    submit_request,
)


def _incident(user_id: str, title: str) -> dict[str, Any]:
    return {"title": title, "message": "A listed-only drill.", "audience": "listed",
            "user_ids": [user_id]}  # fmt: skip


async def test_an_incident_sent_twice_at_once_with_one_key_is_declared_once(
    client: httpx.AsyncClient, bus: BusTail, root: Operator, db: asyncpg.Connection
) -> None:
    user = await active_user(client, bus)
    title = f"Drill {uuid.uuid4().hex[:8]}"
    headers = {**root.headers, "Idempotency-Key": str(uuid.uuid4())}
    body, path = _incident(user.id, title), f"{API}/operator/incidents"
    first, second = await asyncio.gather(
        *(client.post(path, json=body, headers=headers) for _ in range(2))
    )
    assert (first.status_code, second.status_code) == (201, 201), (first.text, second.text)
    assert first.json() == second.json()
    replayed = [r.headers.get(REPLAYED_HEADER) for r in (first, second)]
    assert sorted(map(str, replayed)) == ["None", "true"]  # one did it, one replayed it
    assert await db.fetchval("SELECT count(*) FROM incidents WHERE title = $1", title) == 1
    # Sent again later (a retry after a lost answer): the same answer, nothing new.
    again = await client.post(
        f"{API}/operator/incidents", json=_incident(user.id, title), headers=headers
    )
    assert again.status_code == 201
    assert again.json() == first.json()
    assert again.headers[REPLAYED_HEADER] == "true"
    assert await db.fetchval("SELECT count(*) FROM incidents WHERE title = $1", title) == 1
    # Without a key, each send is its own incident, as before.
    for _ in range(2):
        plain = await client.post(
            f"{API}/operator/incidents", json=_incident(user.id, title), headers=root.headers
        )
        assert plain.status_code == 201
        assert REPLAYED_HEADER not in plain.headers
    assert await db.fetchval("SELECT count(*) FROM incidents WHERE title = $1", title) == 3


async def test_a_reply_sent_again_with_its_key_replies_and_mails_once(
    client: httpx.AsyncClient, bus: BusTail, root: Operator, db: asyncpg.Connection
) -> None:
    user = await active_user(client, bus)
    support = await new_operator(client, root, "support")
    request_id = await submit_request(client, user, "When is my phone ready?")
    headers = {**support.headers, "Idempotency-Key": f"reply-{uuid.uuid4()}"}
    path = f"{API}/operator/requests/{request_id}/replies"
    first = await client.post(path, json={"text": "Ready on Friday."}, headers=headers)
    assert first.status_code == 201, first.text
    again = await client.post(path, json={"text": "Ready on Friday."}, headers=headers)
    assert again.status_code == 201, again.text
    assert again.json() == first.json()
    assert again.headers[REPLAYED_HEADER] == "true"
    messages = await db.fetchval(
        "SELECT count(*) FROM request_messages WHERE request_id = $1 AND author = 'operator'",
        uuid.UUID(request_id),
    )
    assert messages == 1
    replied = await bus.event("request.replied.", user.id)
    assert replied["data"]["reply_id"] == first.json()["reply_id"]
    # The same key for another reply (another text, another request) is refused.
    other = await client.post(path, json={"text": "Ready on Monday."}, headers=headers)
    assert other.status_code == 422, other.text
    assert other.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert other.json()["type"].endswith("/idempotency-key-reused")


async def test_a_malformed_key_is_a_422_problem_and_does_nothing(
    client: httpx.AsyncClient, bus: BusTail, root: Operator, db: asyncpg.Connection
) -> None:
    user = await active_user(client, bus)
    title = f"Drill {uuid.uuid4().hex[:8]}"
    for key in ("short", "has spaces in it", "x" * 129):
        refused = await client.post(
            f"{API}/operator/incidents",
            json=_incident(user.id, title),
            headers={**root.headers, "Idempotency-Key": key},
        )
        assert refused.status_code == 422, (key, refused.text)
        assert refused.headers["content-type"] == PROBLEM_CONTENT_TYPE
    assert await db.fetchval("SELECT count(*) FROM incidents WHERE title = $1", title) == 0


async def test_a_users_request_and_device_sent_again_with_a_key_are_made_once(
    client: httpx.AsyncClient, bus: BusTail, db: asyncpg.Connection, settings: PlatformSettings
) -> None:
    """A user's POSTs that make something (a request, a message, a device) take a key: sent
    again, the thing made first is answered as it stands now, nothing is made twice; the
    key holds its id only and goes with the account's erasure."""
    user = await active_user(client, bus)
    uid = uuid.UUID(user.id)
    headers = {**user.headers, "Idempotency-Key": str(uuid.uuid4())}
    body = {"category": "repair", "text": "The screen flickers."}
    first, second = await asyncio.gather(
        *(client.post(f"{API}/me/requests", json=body, headers=headers) for _ in range(2))
    )
    assert (first.status_code, second.status_code) == (201, 201), (first.text, second.text)
    assert first.json() == second.json()
    assert sorted(str(r.headers.get(REPLAYED_HEADER)) for r in (first, second)) == [
        "None", "true",
    ]  # fmt: skip
    assert await db.fetchval("SELECT count(*) FROM requests WHERE user_id = $1", uid) == 1
    # What is stored of the answer is the id, never the text (it stays in the vault).
    stored = await db.fetch(
        "SELECT answer::text AS answer FROM idempotency_keys WHERE principal = $1", uid
    )
    assert [r["answer"] for r in stored] == [f'{{"id": "{first.json()["id"]}"}}']
    # Written again in its thread: one message, however often it is sent.
    message_headers = {**user.headers, "Idempotency-Key": str(uuid.uuid4())}
    thread = f"{API}/me/requests/{first.json()['id']}/messages"
    for _ in range(2):
        wrote = await client.post(
            thread, json={"text": "Still flickering."}, headers=message_headers
        )
        assert wrote.status_code == 201, wrote.text
    assert wrote.headers[REPLAYED_HEADER] == "true"
    assert [m["text"] for m in wrote.json()["messages"]] == [body["text"], "Still flickering."]

    device_headers = {**user.headers, "Idempotency-Key": str(uuid.uuid4())}
    device = {"model": "Phone A", "damage_state": "cracked_screen"}
    added = await client.post(f"{API}/me/devices", json=device, headers=device_headers)
    assert added.status_code == 201, added.text
    again = await client.post(f"{API}/me/devices", json=device, headers=device_headers)
    assert (again.status_code, again.json()) == (201, added.json())
    assert again.headers[REPLAYED_HEADER] == "true"
    assert await db.fetchval("SELECT count(*) FROM devices WHERE user_id = $1", uid) == 1
    # Removed since: the replay says it is gone rather than making it again.
    removed = await client.delete(f"{API}/me/devices/{added.json()['id']}", headers=user.headers)
    assert removed.status_code == 204, removed.text
    gone = await client.post(f"{API}/me/devices", json=device, headers=device_headers)
    assert gone.status_code == 404, gone.text
    others = "SELECT count(*) FROM devices WHERE user_id = $1 AND id <> $2"
    assert await db.fetchval(others, uid, uuid.UUID(added.json()["id"])) == 0

    receipt = await erase_subject(settings, bus, user.id, ())
    assert receipt["erased"]["idempotency_keys"] == 3
    assert await db.fetchval("SELECT count(*) FROM idempotency_keys WHERE principal = $1", uid) == 0
