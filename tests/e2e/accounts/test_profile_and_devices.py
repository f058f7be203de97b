"""Profile, preferences, devices and personalised content (promises P-02, P-11 parts)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
import pytest

from services.accounts.domain.content import catalogue
from tests.e2e.accounts.support import API, BusTail, User, active_user, unique_email


async def _device(client: httpx.AsyncClient, user: User, model: str, state: str) -> str:
    response = await client.post(
        f"{API}/me/devices", json={"model": model, "damage_state": state}, headers=user.headers
    )
    assert response.status_code == 201, response.text
    device_id: str = response.json()["id"]
    return device_id


async def _content(client: httpx.AsyncClient, user: User) -> dict[str, object]:
    response = await client.get(f"{API}/me/content", headers=user.headers)
    assert response.status_code == 200
    body: dict[str, object] = response.json()
    return body


def _ids(content: dict[str, object]) -> list[str]:
    items = content["items"]
    assert isinstance(items, list)
    return [i["id"] for i in items]


@pytest.mark.promise("P-02")
async def test_content_follows_each_users_damage_state_unless_personalisation_is_off(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    cracked, soaked = await active_user(client, bus), await active_user(client, bus)
    await _device(client, cracked, "Phone X", "cracked_screen")
    await _device(client, soaked, "Tablet Y", "water")
    cracked_content, soaked_content = (
        await _content(client, cracked),
        await _content(client, soaked),
    )
    expected = catalogue()["by_damage_state"]
    assert _ids(cracked_content) == [i["id"] for i in expected["cracked_screen"]]
    assert _ids(soaked_content) == [i["id"] for i in expected["water"]]
    assert _ids(cracked_content) != _ids(soaked_content)
    assert cracked_content["personalised"] is True

    off = await client.put(
        f"{API}/me/preferences",
        json={"marketing_email": False, "personalisation": False, "tracking_opt_out": False},
        headers=soaked.headers,
    )
    assert off.status_code == 200
    generic = await _content(client, soaked)
    assert generic["personalised"] is False
    assert _ids(generic) == [i["id"] for i in catalogue()["generic"]]
    event = await bus.event("preferences.changed.", soaked.id, personalisation=False)
    assert set(event["data"]) == {
        "user_id",
        "marketing_email",
        "personalisation",
        "tracking_opt_out",
    }


async def test_devices_can_be_added_read_edited_and_removed(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    user = await active_user(client, bus)
    device_id = await _device(client, user, "Phone Z", "battery")
    one = await client.get(f"{API}/me/devices/{device_id}", headers=user.headers)
    assert one.json()["model"] == "Phone Z"
    edited = await client.patch(
        f"{API}/me/devices/{device_id}", json={"damage_state": "camera"}, headers=user.headers
    )
    assert edited.json()["damage_state"] == "camera"
    assert edited.json()["model"] == "Phone Z"
    invalid = await client.patch(
        f"{API}/me/devices/{device_id}", json={"damage_state": "on fire"}, headers=user.headers
    )
    assert invalid.status_code == 422  # damage states come from a fixed list
    changed = await bus.event("device.changed.", user.id, change="edited")
    assert changed["data"]["damage_state"] == "camera"
    assert "model" not in changed["data"]
    assert (
        await client.delete(f"{API}/me/devices/{device_id}", headers=user.headers)
    ).status_code == 204
    assert (await client.get(f"{API}/me/devices", headers=user.headers)).json() == []
    assert (
        await client.get(f"{API}/me/devices/{device_id}", headers=user.headers)
    ).status_code == 404


async def test_profile_edits_republish_the_card_and_a_new_email_waits_for_its_link(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    user = await active_user(client, bus)
    new_email = unique_email("moved")
    change = {"name": "New Name", "email": new_email, "current_password": user.password}
    edited = await client.patch(f"{API}/me", json=change, headers=user.headers)
    assert edited.status_code == 200, edited.text
    # The account keeps its confirmed address until the new one is confirmed.
    assert (edited.json()["email"], edited.json()["email_verified"]) == (user.email, True)
    assert edited.json()["pending_email"] == new_email
    until = datetime.fromisoformat(edited.json()["pending_email_until"])
    assert timedelta(hours=47) < until - datetime.now(UTC) <= timedelta(hours=48)  # its link's
    updated = await bus.event("profile.updated.", user.id)
    assert updated["data"]["fields"] == ["name", "pending_email"]  # names, never values
    card = await bus.card(user.id, pending_email=new_email)
    assert (card.name, card.email) == ("New Name", user.email)
    notice = await bus.notice(user.id, "verify_new_email")
    assert notice["channels"] == ["email"]
    assert notice["params"]["change"] == str(card.pending_change)  # the link's own change
    old_login = {"email": user.email, "password": user.password}
    assert (await client.post(f"{API}/sessions", json=old_login)).status_code == 200

    token = notice["params"]["token"]
    assert (
        await client.post(f"{API}/email-verifications", json={"token": token})
    ).status_code == 200
    me = (await client.get(f"{API}/me", headers=user.headers)).json()
    assert (me["email"], me["email_verified"]) == (new_email, True)
    assert (me["pending_email"], me["pending_email_until"]) == (None, None)
    assert me["name"] == "New Name"
    await bus.card(user.id, email=new_email, pending_email=None)
    confirmed = await bus.event("profile.updated.", user.id, fields=["email", "pending_email"])
    assert confirmed["data"]["fields"] == ["email", "pending_email"]
    login = await client.post(
        f"{API}/sessions", json={"email": new_email, "password": user.password}
    )
    assert login.status_code == 200
    assert (await client.post(f"{API}/sessions", json=old_login)).status_code == 401


async def test_a_name_and_locale_edit_republishes_the_whole_card_after_its_event(
    client: httpx.AsyncClient, bus: BusTail
) -> None:
    user = await active_user(client, bus)
    for name, locale in (("First Rename", "fr"), ("Second Rename", "de")):
        edited = await client.patch(
            f"{API}/me", json={"name": name, "locale": locale}, headers=user.headers
        )
        assert edited.status_code == 200, edited.text
        assert (edited.json()["name"], edited.json()["locale"]) == (name, locale)
        card = await bus.card(user.id, name=name)
        assert (card.locale, card.email) == (locale, user.email)
        assert card.active is True
    read = await client.get(f"{API}/me", headers=user.headers)
    assert (read.json()["name"], read.json()["locale"]) == ("Second Rename", "de")
    updates = await bus.wait_for(
        lambda r: r.key == user.id and r.value is not None
        and r.value["type"].startswith("profile.updated."),
        count=2,
    )  # fmt: skip
    assert [u.value["data"]["fields"] for u in updates if u.value] == [["locale", "name"]] * 2
