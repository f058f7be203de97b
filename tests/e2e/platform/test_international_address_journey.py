"""A user whose address is internationalised signs up, gets the verification email
(sent with SMTPUTF8) and verifies it: the same journey as any other address."""

from __future__ import annotations

import uuid

import httpx

from tests.e2e.platform.journeys import API, needs_accounts_and_notifier, signed_up_and_verified
from tests.support.mailbox import Mailbox


async def test_an_internationalised_address_is_verified_from_its_mailbox(platform: str) -> None:
    needs_accounts_and_notifier()
    address = f"josé-{uuid.uuid4().hex[:12]}@exämple.org"
    mailbox = Mailbox()
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        try:
            headers = await signed_up_and_verified(
                client, mailbox, "José", address, f"pw-{uuid.uuid4().hex}"
            )
            profile = (await client.get(f"{API}/me", headers=headers)).json()
            assert (profile["email"], profile["email_verified"]) == (address, True)
        finally:
            await mailbox.close()
