"""Tokens are checked strictly, and no user reaches another user's objects (BOLA)."""

from __future__ import annotations

import base64
import json
import time
import uuid
from datetime import timedelta

import httpx
import jwt
import pytest

from services.accounts.config import AccountsSettings
from shared.auth import issue_token
from shared.config import PlatformSettings
from tests.e2e.accounts.support import API, BusTail, active_user


def _lifetime(token: str) -> int:
    """exp - iat of a token's payload, read as any holder can (no signature check)."""
    payload = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert abs(claims["iat"] - time.time()) < 120, claims  # issued just now
    return int(claims["exp"]) - int(claims["iat"])


@pytest.mark.promise("P-08")
async def test_access_tokens_live_no_longer_than_configured(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    """Short-lived tokens: the ones a login and a refresh hand out, as issued."""
    configured = AccountsSettings(environment="test").accounts_access_token_seconds
    assert configured <= 15 * 60  # short-lived: minutes, not hours (refreshed in-session)
    user = await active_user(client, bus)  # logged in through the API
    refreshed = await client.post(f"{API}/sessions/refresh", json={"refresh_token": user.refresh})
    assert refreshed.status_code == 200, refreshed.text
    for token in (user.access, refreshed.json()["access_token"]):
        assert 0 < _lifetime(token) <= configured
    assert refreshed.json()["expires_in"] <= configured


async def test_forged_expired_foreign_and_revoked_tokens_are_refused(
    client: httpx.AsyncClient, bus: BusTail, settings: PlatformSettings
) -> None:
    user = await active_user(client, bus)
    claims = jwt.decode(user.access, options={"verify_signature": False})
    key = settings.token_private_key.get_secret_value()
    header = base64.urlsafe_b64encode(json.dumps({"alg": "none"}).encode()).rstrip(b"=").decode()
    payload = user.access.split(".")[1]
    expired = issue_token(
        key, subject=claims["sub"], session_id=claims["sid"], kind="user", ttl=timedelta(seconds=-5)
    )
    wrong_audience = jwt.encode({**claims, "aud": "elsewhere"}, key, algorithm="EdDSA")
    unknown_session = issue_token(
        key,
        subject=claims["sub"],
        session_id=str(uuid.uuid4()),
        kind="user",
        ttl=timedelta(minutes=5),
    )
    operator_kind = issue_token(
        key,
        subject=claims["sub"],
        session_id=claims["sid"],
        kind="operator",
        roles=("admin",),
        ttl=timedelta(minutes=5),
    )
    tampered = user.access[:-4] + ("AAAA" if not user.access.endswith("AAAA") else "BBBB")
    for token in (f"{header}.{payload}.", expired, wrong_audience, unknown_session, tampered):
        response = await client.get(f"{API}/me", headers={"Authorization": f"Bearer {token}"})
        assert response.status_code == 401, token
    # A token of the wrong kind is refused on user endpoints.
    wrong_kind = await client.get(f"{API}/me", headers={"Authorization": f"Bearer {operator_kind}"})
    assert wrong_kind.status_code == 403
    # Revoked: after logout the same, valid-looking token fails.
    assert (await client.get(f"{API}/me", headers=user.headers)).status_code == 200
    await client.delete(f"{API}/sessions/current", headers=user.headers)
    assert (await client.get(f"{API}/me", headers=user.headers)).status_code == 401


async def test_a_user_never_reads_nor_changes_another_users_objects(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    owner, intruder = await active_user(client, bus), await active_user(client, bus)
    device = await client.post(
        f"{API}/me/devices",
        json={"model": "Owner phone", "damage_state": "water"},
        headers=owner.headers,
    )
    request = await client.post(
        f"{API}/me/requests",
        json={"category": "repair", "text": "Owner's secret story"},
        headers=owner.headers,
    )
    deletion = await client.post(
        f"{API}/me/deletion-requests", json={"password": owner.password}, headers=owner.headers
    )
    device_id, request_id = device.json()["id"], request.json()["id"]
    deletion_id = deletion.json()["id"]
    attempts = [
        ("GET", f"/me/devices/{device_id}", None),
        ("PATCH", f"/me/devices/{device_id}", {"damage_state": "intact"}),
        ("DELETE", f"/me/devices/{device_id}", None),
        ("GET", f"/me/requests/{request_id}", None),
        ("POST", f"/me/requests/{request_id}/messages", {"text": "hijack"}),
        ("DELETE", f"/me/requests/{request_id}", None),
        ("POST", f"/me/deletion-requests/{deletion_id}/cancel", None),
    ]
    for method, path, body in attempts:
        response = await client.request(method, f"{API}{path}", json=body, headers=intruder.headers)
        assert response.status_code == 404, (method, path, response.status_code)
    # Lists only ever hold the caller's own objects.
    for path in ("/me/devices", "/me/requests", "/me/deletion-requests"):
        assert (await client.get(f"{API}{path}", headers=intruder.headers)).json() == []
    # The owner's objects are untouched.
    still = await client.get(f"{API}/me/devices/{device_id}", headers=owner.headers)
    assert still.json()["damage_state"] == "water"
    thread = await client.get(f"{API}/me/requests/{request_id}", headers=owner.headers)
    assert [m["text"] for m in thread.json()["messages"]] == ["Owner's secret story"]
    mine = await client.get(f"{API}/me/deletion-requests", headers=owner.headers)
    assert [d["status"] for d in mine.json()] == ["requested"]
