"""A user whose address is internationalised signs up, gets the verification email
(sent with SMTPUTF8) and verifies it: the same journey as any other address."""

from __future__ import annotations

import uuid

import httpx

from tests.e2e.platform.test_password_reset_journey import (
    API,
    needs_accounts_and_notifier,
    token_from_mail,
)
from tests.support.mailbox import Mailbox


async def test_an_internationalised_address_is_verified_from_its_mailbox(platform: str) -> None:
    needs_accounts_and_notifier()
    address = f"josé-{uuid.uuid4().hex[:12]}@exämple.org"
    password = f"pw-{uuid.uuid4().hex}"
    mailbox = Mailbox()
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        try:
            signed = await client.post(
                f"{API}/users", json={"name": "José", "email": address, "password": password}
            )
            assert signed.status_code == 202, signed.text
            token = await token_from_mail(mailbox, address, "verify-email", 1)
            verified = await client.post(f"{API}/email-verifications", json={"token": token})
            assert verified.status_code == 200
            login = await client.post(
                f"{API}/sessions", json={"email": address, "password": password}
            )
            assert login.status_code == 200
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
            profile = (await client.get(f"{API}/me", headers=headers)).json()
            assert (profile["email"], profile["email_verified"]) == (address, True)
        finally:
            await mailbox.close()
