"""An email change is verified at the new address: the link goes there (never to the old
one, though the card and the command travel on different topics) and confirms it."""

from __future__ import annotations

import uuid

import httpx

from tests.e2e.platform.journeys import (
    API,
    needs_accounts_and_notifier,
    signed_up_and_verified,
    token_from_mail,
)
from tests.support.mailbox import Mailbox


async def test_a_changed_email_is_verified_at_the_new_address_only(platform: str) -> None:
    needs_accounts_and_notifier()
    old = f"old-{uuid.uuid4().hex[:12]}@example.com"
    new = f"new-{uuid.uuid4().hex[:12]}@example.com"
    password = f"pw-{uuid.uuid4().hex}"
    mailbox = Mailbox()
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        try:
            headers = await signed_up_and_verified(client, mailbox, "Mover", old, password)

            change = {"email": new, "current_password": password}
            changed = await client.patch(f"{API}/me", json=change, headers=headers)
            assert changed.status_code == 200, changed.text
            link = await token_from_mail(mailbox, new, "verify-email", 1)
            confirmed = await client.post(f"{API}/email-verifications", json={"token": link})
            assert confirmed.status_code == 200
            profile = (await client.get(f"{API}/me", headers=headers)).json()
            assert (profile["email"], profile["email_verified"]) == (new, True)
            assert len(await mailbox.to(old)) == 1  # only its own first verification
        finally:
            await mailbox.close()
