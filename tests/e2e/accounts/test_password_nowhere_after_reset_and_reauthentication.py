"""P-01 beyond sign-up: the plaintext password also travels in a reset's completion, in a
deletion request's re-authentication and in an email change's current password (each
also refused once, with a wrong password). None of them may leave it in a table of any
service's database, a log line or a Kafka record.

The stores are searched once the work of those very requests is everywhere it goes: the
gateway's access log holds each request (by the id the client sent), and the events the
accepted ones queued are on Kafka (they carry the gateway's trace id of the request) and
were handled by the notifier and the deletion service. No fixed wait.
"""

from __future__ import annotations

import asyncio
import uuid

import asyncpg
import httpx
import pytest

from shared.config import PlatformSettings
from shared.events.topics import all_topics
from tests.e2e.accounts.support import (
    API,
    BusTail,
    Record,
    active_user,
    gateway_trace_ids,
    log_in,
    logs_holding,
    read_topics_from_beginning,
    tables_holding,
    unique_email,
)
from tests.e2e.platform.journeys import needs
from tests.support.mailbox import eventually
from tests.support.request_ids import kept_request_id


def traces_of(secret: str) -> list[str]:
    """The secret as text, and as the hex a bytea column or a record's bytes would show."""
    return [secret, secret.encode().hex()]


def _carries(record: Record, traces: list[str]) -> bool:
    """Whether a record on the bus was queued by the work of one of these traces."""
    traceparent = str(record.value.get("traceparent")) if record.value else ""
    return any(trace in traceparent for trace in traces)


async def _unrelayed(settings: PlatformSettings, traces: list[str]) -> int:
    """Events of these traces still in accounts' outbox (the relay deletes what it sent)."""
    return await _count(
        settings,
        "accounts",
        "SELECT count(*) FROM bus_outbox WHERE convert_from(value, 'UTF8') LIKE ANY($1::text[])",
        [f"%{trace}%" for trace in traces],
    )


async def _count(settings: PlatformSettings, database: str, query: str, *args: object) -> int:
    conn = await asyncpg.connect(settings.database_dsn(database))
    try:
        return int(await conn.fetchval(query, *args))
    finally:
        await conn.close()


@pytest.mark.promise("P-01")
async def test_a_reset_a_deletion_reauthentication_and_an_email_change_store_no_password(
    client: httpx.AsyncClient, bus: BusTail, settings: PlatformSettings
) -> None:
    # The stores are searched once the notifier and the deletion service hold the work.
    needs("notifier", "deletion")
    signed_up_with = f"Plain-{uuid.uuid4().hex}"
    reset_to = f"Plain-{uuid.uuid4().hex}"
    wrong = {kind: f"Plain-{uuid.uuid4().hex}" for kind in ("email", "deletion")}
    user = await active_user(client, bus, password=signed_up_with)
    ids = {
        kind: kept_request_id(f"p01-{kind}")
        for kind in ("reset", "email-refused", "email", "deletion-refused", "deletion")
    }

    def sent_as(kind: str, **headers: str) -> dict[str, str]:
        return {**headers, "X-Request-Id": ids[kind]}

    # A password reset, completed with the mailed token: the new password travels.
    asked = await client.post(f"{API}/password-resets", json={"email": user.email})
    assert asked.status_code == 202, asked.text
    token = (await bus.notice(user.id, "password_reset"))["params"]["token"]
    done = await client.post(
        f"{API}/password-resets/complete",
        json={"token": token, "new_password": reset_to},
        headers=sent_as("reset"),
    )
    assert done.status_code == 204, done.text
    user.password = reset_to
    await log_in(client, user)

    # An email change needs the current password: a wrong one first, then the right one.
    new_address = unique_email("moved")
    refused = await client.patch(
        f"{API}/me",
        json={"email": new_address, "current_password": wrong["email"]},
        headers=sent_as("email-refused", **user.headers),
    )
    assert refused.status_code == 403, refused.text
    changed = await client.patch(
        f"{API}/me",
        json={"email": new_address, "current_password": reset_to},
        headers=sent_as("email", **user.headers),
    )
    assert changed.status_code == 200, changed.text

    # A deletion request re-authenticates: a wrong password first, then the right one.
    refused = await client.post(
        f"{API}/me/deletion-requests",
        json={"password": wrong["deletion"]},
        headers=sent_as("deletion-refused", **user.headers),
    )
    assert refused.status_code == 403, refused.text
    requested = await client.post(
        f"{API}/me/deletion-requests",
        json={"password": reset_to},
        headers=sent_as("deletion", **user.headers),
    )
    assert requested.status_code == 202, requested.text
    deletion_id = uuid.UUID(requested.json()["id"])
    for response, kind in ((done, "reset"), (changed, "email"), (requested, "deletion")):
        assert response.headers["x-request-id"] == ids[kind]

    # Everything those requests did is written: the gateway logged all five; accounts
    # relayed every event the accepted ones queued (the relay deletes what it published;
    # each event carries its request's trace id) ...
    traces = await gateway_trace_ids(list(ids.values()))
    accepted = [traces[ids[kind]] for kind in ("reset", "email", "deletion")]
    await eventually(lambda: _unrelayed(settings, accepted), lambda n: n == 0)
    # ... and the notifier holds each notice they asked for (the reset's, the new
    # address's link, the deletion's), the deletion service the deletion request.
    commands = await bus.wait_for(
        lambda r: r.topic == "notifier.commands" and _carries(r, accepted), count=3
    )
    notices = [uuid.UUID(r.value["data"]["notice_id"]) for r in commands if r.value]
    query = "SELECT count(*) FROM notices WHERE notice_id = ANY($1::uuid[])"
    await eventually(
        lambda: _count(settings, "notifier", query, notices), lambda n: n == len(notices)
    )
    query = "SELECT count(*) FROM deletion_requests WHERE request_id = $1"
    await eventually(lambda: _count(settings, "deletion", query, deletion_id), lambda n: n == 1)

    passwords = [signed_up_with, reset_to, *wrong.values()]
    needles = [trace for password in passwords for trace in traces_of(password)]
    # The scan can see what it looks for: the user's id is in accounts' users table,
    # and the hex of a bytea column (the email's blind index) is read as such.
    index = await _email_index(settings, user.id)
    assert "accounts.users" in await tables_holding(settings, [user.id, index.hex()])
    leaked = await tables_holding(settings, needles)
    assert not leaked, f"a password is in tables {leaked}"
    logged = await asyncio.to_thread(logs_holding, [n.encode() for n in needles])
    assert not logged, f"a password is in logs {logged}"
    # The gateway's access log was searched, and holds these very requests.
    assert await asyncio.to_thread(logs_holding, [ids["deletion"].encode()]) == [
        "gateway-access.log"
    ]
    records = await read_topics_from_beginning(settings, [t.name for t in all_topics()])
    on_kafka = [n for n in needles if any(n.encode() in r for r in records)]
    assert not on_kafka, "a password is on a Kafka topic"

    cancelled = await client.post(
        f"{API}/me/deletion-requests/{deletion_id}/cancel", headers=user.headers
    )
    assert cancelled.status_code == 200, cancelled.text


async def _email_index(settings: PlatformSettings, user_id: str) -> bytes:
    conn = await asyncpg.connect(settings.database_dsn("accounts"))
    try:
        index: bytes = await conn.fetchval(
            "SELECT email_index FROM users WHERE id = $1", uuid.UUID(user_id)
        )
        return index
    finally:
        await conn.close()
