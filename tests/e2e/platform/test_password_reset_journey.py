"""A user locked out of their password gets back in from their mailbox alone: sign-up,
verification and reset links are read from the mail the real SMTP server received."""

from __future__ import annotations

import uuid

import httpx
import pytest

from tests.e2e.platform.journeys import API, needs_accounts_and_notifier, token_from_mail
from tests.support.mailbox import Mailbox


@pytest.mark.promise("P-08")
async def test_a_forgotten_password_is_reset_from_the_mailbox(platform: str) -> None:
    needs_accounts_and_notifier()
    address = f"reset-{uuid.uuid4().hex[:12]}@example.com"
    mailbox = Mailbox()
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        try:
            signed = await client.post(
                f"{API}/users",
                json={"name": "Reset Journey", "email": address, "password": "first-pw-123"},
            )
            assert signed.status_code == 202
            verify = await token_from_mail(mailbox, address, "verify-email", 1)
            verified = await client.post(f"{API}/email-verifications", json={"token": verify})
            assert verified.status_code == 200

            assert (
                await client.post(f"{API}/password-resets", json={"email": address})
            ).status_code == 202
            reset_mail = (await mailbox.wait_for([address], 2))[1]
            assert reset_mail["Subject"] == "Reset your iMT password"
            token = await token_from_mail(mailbox, address, "reset-password", 2)
            new_password = f"pw-{uuid.uuid4().hex}"
            done = await client.post(
                f"{API}/password-resets/complete",
                json={"token": token, "new_password": new_password},
            )
            assert done.status_code == 204

            logged_in = await client.post(
                f"{API}/sessions", json={"email": address, "password": new_password}
            )
            assert logged_in.status_code == 200
            # ... and the mailbox is told the password changed.
            changed = (await mailbox.wait_for([address], 3))[2]
            assert changed["Subject"] == "Your iMT password was changed"
        finally:
            await mailbox.close()
