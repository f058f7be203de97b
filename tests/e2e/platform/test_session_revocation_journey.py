"""P-08 across services: an ended session's access token stops working everywhere.

Accounts checks the session on every request; the notifier and deletion APIs verify the
signature and refuse what accounts' sessions topic says has ended. A user signed up and
verified through the gateway uses a token on both, ends its session (a password change
ends all of them; logout, this one), and the same token is refused there shortly after.
"""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.e2e.platform.journeys import API, needs, signed_up_and_verified
from tests.support.mailbox import Mailbox, eventually

ELSEWHERE = ("/api/notifier/me/export", "/api/notifier/inbox", "/api/deletion/me/requests")
# Revocations arrive within about a second; this only bounds the wait.
WITHIN = 10.0


async def _answers(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, int]:
    return {path: (await client.get(path, headers=headers)).status_code for path in ELSEWHERE}


async def _refused_everywhere(client: httpx.AsyncClient, headers: dict[str, str]) -> None:
    final = await eventually(
        lambda: _answers(client, headers),
        lambda codes: set(codes.values()) == {401},
        timeout=WITHIN,
        interval=0.5,
    )
    assert set(final.values()) == {401}, final
    assert (await client.get(f"{API}/me", headers=headers)).status_code == 401


@pytest.mark.promise("P-08")
async def test_a_password_change_ends_old_tokens_on_every_service(platform: str) -> None:
    needs("accounts", "notifier", "deletion")
    address = f"revoke-{uuid.uuid4().hex[:12]}@example.org"
    password = f"pw-{uuid.uuid4().hex}"
    mailbox = Mailbox()
    try:
        async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
            old = await signed_up_and_verified(client, mailbox, "Revoke Me", address, password)
            assert set((await _answers(client, old)).values()) == {200}
            changed = await client.post(
                f"{API}/me/password",
                json={"current_password": password, "new_password": f"new-{password}"},
                headers=old,
            )
            assert changed.status_code == 200, changed.text
            new = {"Authorization": f"Bearer {changed.json()['access_token']}"}
            await _refused_everywhere(client, old)
            # The session the change started is not caught by it.
            assert set((await _answers(client, new)).values()) == {200}
    finally:
        await mailbox.close()


@pytest.mark.promise("P-08")
async def test_logout_ends_the_token_on_every_service(platform: str) -> None:
    needs("accounts", "notifier", "deletion")
    address = f"logout-{uuid.uuid4().hex[:12]}@example.org"
    mailbox = Mailbox()
    try:
        async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
            headers = await signed_up_and_verified(
                client, mailbox, "Log Out", address, f"pw-{uuid.uuid4().hex}"
            )
            assert set((await _answers(client, headers)).values()) == {200}
            ended = await client.delete(f"{API}/sessions/current", headers=headers)
            assert ended.status_code == 204, ended.text
            await _refused_everywhere(client, headers)
    finally:
        await mailbox.close()
