"""Someone signs up first with another's address, choosing the password (a pre-hijack).
The owner's own sign-up makes nothing, and answers as any sign-up does; the owner's
mailbox is told, and the link in that mail gives them the account under their own
password. Every step is read from the mail the real SMTP server received."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from tests.e2e.notifier.support import parts
from tests.e2e.platform.journeys import API, needs_accounts_and_notifier, token_from_mail
from tests.support.mailbox import Mailbox

SQUATTER_NAME = "Claim your prize at prize-desk.example"


@pytest.mark.promise("P-08")
async def test_the_owner_of_an_address_takes_back_an_account_someone_made_with_it(
    platform: str,
) -> None:
    needs_accounts_and_notifier()
    address = f"owner-{uuid.uuid4().hex[:12]}@example.com"
    squatters, owners = f"pw-{uuid.uuid4().hex}", f"pw-{uuid.uuid4().hex}"
    mailbox = Mailbox()
    async with httpx.AsyncClient(base_url=platform, timeout=30) as client:
        try:

            async def sign_up(name: str, password: str) -> httpx.Response:
                body = {"name": name, "email": address, "password": password}
                return await client.post(f"{API}/users", json=body)

            first = await sign_up(SQUATTER_NAME, squatters)
            assert first.status_code == 202
            await mailbox.wait_for([address], 1)  # its verification link: left unused

            again = await sign_up("The Owner", owners)
            assert again.status_code == 202
            assert again.json().keys() == first.json().keys()  # nothing says it was taken
            assert again.json()["user_id"] != first.json()["user_id"]
            told = (await mailbox.wait_for([address], 2))[1]
            assert (
                told["Subject"] == "Someone tried to create an iMT account with your email address"
            )
            text, html = parts(told)
            assert "do not confirm it" in text
            assert "Hello there," in text  # the squatter's name is never printed
            assert "prize-desk" not in text
            assert "prize-desk" not in html
            # Asked again at once: the address is not mailed twice within the interval.
            assert (await sign_up("The Owner", owners)).status_code == 202

            token = await token_from_mail(mailbox, address, "reset-password", 2)
            done = await client.post(
                f"{API}/password-resets/complete", json={"token": token, "new_password": owners}
            )
            assert done.status_code == 204

            login = {"email": address}
            mine = await client.post(f"{API}/sessions", json={**login, "password": owners})
            assert mine.status_code == 200, mine.text  # the address is confirmed: it is active
            theirs = await client.post(f"{API}/sessions", json={**login, "password": squatters})
            assert theirs.status_code == 401
            changed = (await mailbox.wait_for([address], 3))[2]
            assert changed["Subject"] == "Your iMT password was changed"
            await asyncio.sleep(2)  # what the third sign-up would have queued has arrived
            assert len(await mailbox.to(address)) == 3
        finally:
            await mailbox.close()
