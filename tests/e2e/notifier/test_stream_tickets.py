"""The live inbox from a browser: EventSource cannot send a token, so it presents a
single-use ticket that a token bought (and that is worthless once used)."""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from aiokafka import AIOKafkaProducer

from services.notifier import stream
from shared.events.catalogue.accounts import SessionsRevoked
from tests.e2e.notifier.support import publish, publish_contact, sse_events, user_token


async def _ticket(api: httpx.AsyncClient, uid: uuid.UUID) -> str:
    response = await api.post("/api/notifier/inbox/stream-tickets", headers=user_token(uid))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["expires_in"] == 30
    ticket: str = body["ticket"]
    return ticket


async def _open(platform: str, query: str) -> tuple[int, str, str]:
    """Status, content type and the first event name (or the body) of a stream request."""
    async with (
        httpx.AsyncClient(base_url=platform, timeout=30) as client,
        client.stream("GET", f"/api/notifier/inbox/stream{query}") as response,
    ):
        if response.status_code != 200:
            await response.aread()
            return response.status_code, response.headers["content-type"], response.text
        async with asyncio.timeout(15):
            async for name, _ in sse_events(response):
                if name == "ready":
                    return 200, response.headers["content-type"], name
    raise AssertionError("the stream ended before it was ready")


async def test_a_ticket_opens_the_stream_once(
    api: httpx.AsyncClient, producer: AIOKafkaProducer, platform: str
) -> None:
    uid, _ = await publish_contact(producer)
    ticket = await _ticket(api, uid)

    status, kind, first = await _open(platform, f"?ticket={ticket}")
    assert (status, first) == (200, "ready")
    assert kind.startswith("text/event-stream")

    for query in (f"?ticket={ticket}", f"?ticket={'x' * 43}", ""):  # spent, unknown, none
        status, kind, body = await _open(platform, query)
        assert status == 401, query
        assert kind.startswith("application/problem+json")
        assert "ticket" in body or "token" in body


async def test_tickets_are_only_for_users(api: httpx.AsyncClient) -> None:
    anonymous = await api.post("/api/notifier/inbox/stream-tickets")
    assert anonymous.status_code == 401
    assert anonymous.headers["content-type"].startswith("application/problem+json")


@pytest.mark.promise("P-08")
async def test_a_stream_ends_when_its_session_is_revoked(
    api: httpx.AsyncClient, producer: AIOKafkaProducer, platform: str
) -> None:
    """A password change (or reset, or logout) ends every session: a live stream opened
    by one of them ends too, at its next keep-alive, and a ticket it bought is refused."""
    uid, _ = await publish_contact(producer)
    ticket, spare = await _ticket(api, uid), await _ticket(api, uid)
    async with (
        httpx.AsyncClient(base_url=platform, timeout=60) as client,
        client.stream("GET", f"/api/notifier/inbox/stream?ticket={ticket}") as response,
    ):
        assert response.status_code == 200
        events = sse_events(response)
        async with asyncio.timeout(15):
            assert (await anext(events))[0] == "ready"
        revoked = SessionsRevoked(
            principal_id=uid,
            issued_before=datetime.now(UTC) + timedelta(seconds=2),
            revoked_at=datetime.now(UTC),
            reason="password-changed",
        )
        await publish(producer, revoked, subject=str(uid))
        async with asyncio.timeout(stream.KEEPALIVE_SECONDS * 2 + 10):
            left = [name async for name, _ in events]  # until the server ends the stream
    assert left == []
    status, _, body = await _open(platform, f"?ticket={spare}")
    assert status == 401, body
