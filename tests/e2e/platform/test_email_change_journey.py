"""An email change is confirmed at the new address: the link goes there (never to the old
one, though the card and the command travel on different topics) and only then does the
address change. The old address is told of the change. A change to another account's
address looks the same to the caller; the link reaches that account's owner, whose
mailbox it is, and cannot move the address."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from tests.e2e.accounts.support import admin, new_operator, unique
from tests.e2e.platform.journeys import (
    API,
    needs_accounts_and_notifier,
    signed_up_and_verified,
    token_from_mail,
)
from tests.support.mailbox import Mailbox, eventually


@asynccontextmanager
async def _journey(platform: str) -> AsyncIterator[tuple[httpx.AsyncClient, Mailbox]]:
    """A client of the gateway and the SMTP sink's mailbox, with both services running."""
    needs_accounts_and_notifier()
    mailbox = Mailbox()
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        try:
            yield client, mailbox
        finally:
            await mailbox.close()


async def test_a_changed_email_is_verified_at_the_new_address_only(platform: str) -> None:
    old = f"old-{uuid.uuid4().hex[:12]}@example.com"
    new = f"new-{uuid.uuid4().hex[:12]}@example.com"
    password = f"pw-{uuid.uuid4().hex}"
    async with _journey(platform) as (client, mailbox):
        headers = await signed_up_and_verified(client, mailbox, "Mover", old, password)

        change = {"email": new, "current_password": password}
        changed = await client.patch(f"{API}/me", json=change, headers=headers)
        assert changed.status_code == 200, changed.text
        assert (changed.json()["email"], changed.json()["pending_email"]) == (old, new)
        link = await token_from_mail(mailbox, new, "verify-email", 1)
        [asked] = await mailbox.to(new)
        assert asked["Subject"] == "Confirm the new email address of your iMT account"
        assert await _inbox_titles(client, headers) == []  # the link never goes there
        confirmed = await client.post(f"{API}/email-verifications", json={"token": link})
        assert confirmed.status_code == 200
        profile = (await client.get(f"{API}/me", headers=headers)).json()
        assert (profile["email"], profile["email_verified"]) == (new, True)
        # Its own first verification, then word of the change (nothing to act on).
        told = await mailbox.wait_for([old], count=2)
        assert len(told) == 2
        assert told[-1]["Subject"] == "The email address of your iMT account was changed"
        body = told[-1].get_body(preferencelist=("plain",))
        assert body is not None
        assert "verify-email" not in body.get_content()
        # Told, the replaced address is no longer kept (the outcome is recorded
        # just after the email went: wait for it).
        exported = await eventually(
            lambda: _notifier_export(client, headers),
            lambda data: [e["status"] for e in data["emails"]
                          if e["template"] == "email_changed"] == ["done"],
        )  # fmt: skip
        assert exported["replaced_addresses"] == []


async def test_a_change_to_a_taken_address_reaches_only_its_owner(platform: str) -> None:
    mine, theirs = (f"{who}-{uuid.uuid4().hex[:12]}@example.com" for who in ("me", "owner"))
    password = f"pw-{uuid.uuid4().hex}"
    async with _journey(platform) as (client, mailbox):
        headers = await signed_up_and_verified(client, mailbox, "Taker", mine, password)
        owner = await signed_up_and_verified(client, mailbox, "Owner", theirs, password)

        change = {"email": theirs, "current_password": password}
        changed = await client.patch(f"{API}/me", json=change, headers=headers)
        assert changed.status_code == 200, changed.text
        assert changed.json()["pending_email"] == theirs
        link = await token_from_mail(mailbox, theirs, "verify-email", 2)
        confirmed = await client.post(f"{API}/email-verifications", json={"token": link})
        assert confirmed.status_code == 409
        profile = (await client.get(f"{API}/me", headers=headers)).json()
        assert (profile["email"], profile["pending_email"]) == (mine, theirs)
        theirs_now = (await client.get(f"{API}/me", headers=owner)).json()
        assert theirs_now["email"] == theirs
        # The caller's mailbox got only its own sign-up link: nothing said "taken".
        assert [m["Subject"] for m in await mailbox.to(mine)] == ["Confirm your email address"]


@pytest.mark.promise("P-24")
async def test_an_address_set_by_an_operator_is_confirmed_at_that_address(platform: str) -> None:
    """An operator sets the address a user asked for by email: it is the account's at
    once, unverified until the link mailed to it (not to the old one) is opened."""
    old, new = (f"{who}-{uuid.uuid4().hex[:12]}@example.com" for who in ("asked", "moved"))
    password = f"pw-{uuid.uuid4().hex}"
    async with _journey(platform) as (client, mailbox):
        headers = await signed_up_and_verified(client, mailbox, "Asker", old, password)
        user_id = (await client.get(f"{API}/me", headers=headers)).json()["id"]
        support = await new_operator(client, await admin(client), "support")
        change = {"email": new, "request_reference": unique("MAIL"), "purpose": "on request"}
        moved = await client.patch(
            f"{API}/operator/users/{user_id}", json=change, headers=support.headers
        )
        assert moved.status_code == 200, moved.text
        # The change and its audit row, naming the user's emailed request, went together.
        root = await admin(client)
        audit = await client.get(
            f"{API}/operator/audit", params={"subject_id": user_id}, headers=root.headers
        )
        assert audit.status_code == 200, audit.text
        changes = [r for r in audit.json() if r["action"] == "change"]
        assert [(r["fields"], r["request_reference"], r["purpose"]) for r in changes] == [
            (["email"], change["request_reference"], "on request")
        ]
        profile = (await client.get(f"{API}/me", headers=headers)).json()
        assert (profile["email"], profile["email_verified"]) == (new, False)

        link = await token_from_mail(mailbox, new, "verify-email", 1)
        confirmed = await client.post(f"{API}/email-verifications", json={"token": link})
        assert confirmed.status_code == 200, confirmed.text
        profile = (await client.get(f"{API}/me", headers=headers)).json()
        assert (profile["email"], profile["email_verified"]) == (new, True)
        # The old address had its sign-up link, then word of the change: no link.
        told = await mailbox.wait_for([old], count=2)
        assert [m["Subject"] for m in told] == [
            "Confirm your email address",
            "The email address of your iMT account was changed",
        ]


async def _inbox_titles(client: httpx.AsyncClient, headers: dict[str, str]) -> list[str]:
    response = await client.get("/api/notifier/inbox", headers=headers)
    assert response.status_code == 200, response.text
    return [item["title"] for item in response.json()["items"]]


async def _notifier_export(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    response = await client.get("/api/notifier/me/export", headers=headers)
    assert response.status_code == 200, response.text
    data: dict[str, Any] = response.json()
    return data
