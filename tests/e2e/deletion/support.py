"""Helpers of the deletion end-to-end tests: tokens, lifecycle events, waiting on stages."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest

from shared.auth import OperatorRole, issue_token
from shared.bus import reliable_producer
from shared.config import PlatformSettings
from shared.events import encode_envelope, envelope_for
from shared.events.catalogue.accounts import DeletionRequested

API = "/api/deletion"
# The grace period of the deletion worker these tests start: long enough for a test to
# see a request in grace and act on it (hold, cancel) on a slow run, short enough that a
# whole request still runs in seconds.
GRACE_SECONDS = 10
ALL_STORES = ("accounts", "notifier", "analytics")


def needs_every_service() -> None:
    """Promise tests run through the real store owners: skip when IMT_TEST_SERVICES narrows."""
    wanted = {s for s in os.environ.get("IMT_TEST_SERVICES", "").split(",") if s}
    if wanted and not {"deletion", *ALL_STORES} <= wanted:
        pytest.skip("needs accounts, notifier, analytics and deletion (unset IMT_TEST_SERVICES)")


def token_headers(
    subject: UUID | str, kind: str = "user", roles: tuple[OperatorRole, ...] = ()
) -> dict[str, str]:
    """A token as accounts issues them (the development key pair)."""
    settings = PlatformSettings(environment="test")
    token = issue_token(
        settings.token_private_key.get_secret_value(),
        subject=str(subject),
        session_id=str(uuid.uuid4()),
        kind=kind,  # type: ignore[arg-type]
        ttl=timedelta(minutes=10),
        roles=roles,
    )
    return {"Authorization": f"Bearer {token}"}


def officer() -> dict[str, str]:
    return token_headers(uuid.uuid4(), "operator", ("privacy_officer",))


async def announce_deletion(
    settings: PlatformSettings, subject: UUID, *, scope: str = "account", item: UUID | None = None
) -> UUID:
    """Publish DeletionRequested on accounts.lifecycle exactly as accounts does."""
    request_id = uuid.uuid4()
    event = DeletionRequested(
        user_id=subject, request_id=request_id, initiated_by="user",
        scope=scope, item_id=item,
    )  # fmt: skip
    envelope = envelope_for(event, source="accounts", subject=str(subject))
    producer = reliable_producer(settings)
    await producer.start()
    try:
        await producer.send_and_wait(
            event.topic.name, encode_envelope(envelope), key=envelope.key(),
            headers=envelope.headers(),
        )  # fmt: skip
    finally:
        await producer.stop()
    return request_id


async def status(
    client: httpx.AsyncClient, subject: UUID | str, request_id: UUID | str
) -> dict[str, Any] | None:
    response = await client.get(f"{API}/me/requests/{request_id}", headers=token_headers(subject))
    if response.status_code == 404:
        return None
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def wait_for_stage(
    client: httpx.AsyncClient,
    subject: UUID | str,
    request_id: UUID | str,
    stages: tuple[str, ...],
    timeout: float = 120.0,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        last = await status(client, subject, request_id)
        if last is not None and last["stage"] in stages:
            return last
        await asyncio.sleep(0.25)
    raise AssertionError(f"request {request_id} not in {stages}: {last}")
